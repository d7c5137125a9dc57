"""The first run on a new machine: no Prefect home yet, a busy CPU, and the embedded Prefect server still starts.

The embedded server's first start creates its database and runs every migration; on two loaded cores that takes
longer than Prefect's default `server.ephemeral.startup_timeout_seconds` of 20 s, so `ntkdist run` raises the
timeout unless the user set one (issue 7).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ntkdist import cli
from tests.helpers import descendants, write_cpu_run_config

REPO = Path(__file__).resolve().parents[1]
SETTING = cli.STARTUP_TIMEOUT_SETTING


def clean_env(prefect_home: Path, **extra: str) -> dict:
    """The test process's environment with a Prefect home of the test's own and no start-up timeout chosen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k in (
        "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_EXTRA_LOGGERS")}
    env["PREFECT_HOME"] = str(prefect_home)
    env.update(extra)
    return env


# Each case: (the user's env value, the user's profile value) → (the timeout the run uses, the env var it sees).
# The first case runs before prefect is imported (as in `ntkdist run`), the later ones after (settings refreshed).
RESOLVE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from ntkdist import cli
    for n, (env_value, profile_value) in enumerate([(None, None), ("45", None), (None, "77")]):
        os.environ.pop(cli.STARTUP_TIMEOUT_SETTING, None)
        home = Path(sys.argv[1]) / str(n)
        home.mkdir()
        os.environ["PREFECT_HOME"] = str(home)
        if profile_value:
            (home / "profiles.toml").write_text(
                f'active = "mine"\\n[profiles.mine]\\n{cli.STARTUP_TIMEOUT_SETTING} = "{profile_value}"\\n')
        if env_value:
            os.environ[cli.STARTUP_TIMEOUT_SETTING] = env_value
        cli._prefect_defaults()
        print(cli._startup_timeout(), os.environ.get(cli.STARTUP_TIMEOUT_SETTING))
""")


def test_startup_timeout_is_raised_unless_the_user_chose_one(tmp_path):
    out = subprocess.run([sys.executable, "-c", RESOLVE, str(tmp_path)], cwd=REPO, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    ours = str(cli.STARTUP_TIMEOUT_SECONDS)
    assert out.stdout.split("\n")[-4:] == [
        f"{ours} {ours}",  # unset: ours, through the environment (inherited by the flow's subprocesses)
        "45 45",           # the user's environment variable stands
        "77 None",         # the user's profile stands, and we put no environment variable over it
        "",
    ], out.stdout


def test_server_start_error_names_the_setting():
    prefect_says = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    error = cli._server_start_error(prefect_says)
    assert isinstance(error, cli.ServerStartError)
    assert SETTING in str(error) and "Prefect said" not in str(error)
    died = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server. Ephemeral server "
                        "process exited with code 1. stderr: boom\n" + "x" * 5000)
    assert "exited with code 1. stderr: boom" in str(cli._server_start_error(died))
    assert len(str(cli._server_start_error(died))) < 1000
    assert cli._server_start_error(RuntimeError("something else")) is None


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started (the Prefect server, Ray's processes), so nothing outlives a
    failed test."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def clock(line: str) -> float:
    """Seconds since midnight of a Prefect log line (``HH:MM:SS.mmm | LEVEL | …``)."""
    h, m, s = line.split(" | ", 1)[0].strip().split(":")
    return 3600 * int(h) + 60 * int(m) + float(s)


@pytest.mark.slow
def test_first_run_on_an_empty_prefect_home_under_cpu_load(tmp_path):
    """`ntkdist run` with an empty PREFECT_HOME while every core is kept busy by other processes: the embedded
    server creates its database, starts, and the run finishes. With Prefect's 20 s default this failed on the
    2-core CI machines (issue 7).

    The load lasts until the flow run begins, which is what the start-up timeout covers; the rest of the run (a
    fresh clone's first numba compile among it) is not timed by anything and would only make the test slow.
    """
    config, store = write_cpu_run_config(tmp_path, "tiny", n=100, block=100)
    home = tmp_path / "prefect"
    home.mkdir()
    # One busy loop per core, each in a process of its own that ends itself should it ever be orphaned.
    burn = "import time\nend = time.time() + 400\nwhile time.time() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 2)]
    lines: list[str] = []
    with open(tmp_path / "stdout", "w+") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "ntkdist.cli", "run", str(config)], cwd=REPO,
                                env=clean_env(home), stdout=stdout, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 500

            def read_stderr():
                for line in proc.stderr:
                    lines.append(line)

            reader = threading.Thread(target=read_stderr, daemon=True)
            reader.start()
            while proc.poll() is None and time.monotonic() < deadline:
                if any("Beginning flow run" in line for line in lines):
                    break
                time.sleep(0.5)
            for burner in burners:
                burner.kill()
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            reader.join(timeout=10)
        finally:
            for burner in burners:
                burner.kill()
                burner.wait(timeout=10)
            if proc.poll() is None:
                kill_tree(proc)
        stdout.seek(0)
        out = stdout.read()
    err = "".join(lines)
    assert proc.returncode == 0, err[-3000:]
    assert f"store:    {store}" in out
    assert any(home.iterdir()), "the run did not use the empty Prefect home it was given"
    start = next(line for line in lines if "Starting temporary server" in line)
    begin = next(line for line in lines if "Beginning flow run" in line)
    print(f"\nembedded server on an empty home under load: {clock(begin) - clock(start):.0f} s to the flow run")


@pytest.mark.slow
def test_a_server_that_does_not_start_in_time_names_the_setting(tmp_path):
    """The user's own timeout stands, even an impossible one, and its failure says what to set; no traceback."""
    config, store = write_cpu_run_config(tmp_path, "tiny", n=100, block=100)
    home = tmp_path / "prefect"
    home.mkdir()
    out = subprocess.run([sys.executable, "-m", "ntkdist.cli", "run", str(config)], cwd=REPO,
                         env=clean_env(home, **{SETTING: "1"}), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    message = [line for line in out.stderr.splitlines() if line.startswith("ntkdist: error:")]
    assert len(message) == 1 and "within 1 s" in message[0] and f"{SETTING}=" in message[0], out.stderr[-3000:]
    assert not store.exists()
