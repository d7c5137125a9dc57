"""The embedded Ray instance: Ray's token authentication stays on, and its notice about that is not printed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_embedded_ray_keeps_token_auth_without_the_notice(tmp_path):
    script = textwrap.dedent("""
        from ntkdist.cluster.runtime import ray_session
        with ray_session(num_cpus=1):
            from ray._raylet import AuthenticationMode, get_authentication_mode
            print("token auth:", get_authentication_mode() == AuthenticationMode.TOKEN)
    """)
    environment = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "token auth: True" in done.stdout
    assert "Token authentication is enabled" not in done.stderr + done.stdout
