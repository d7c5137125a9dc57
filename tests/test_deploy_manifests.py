"""The KubeRay manifests agree with each other and with the command line they run.

These tests check what the manifests promise ntkdist itself. Their schema is checked in test_kuberay_schema.py:
the pod templates against the Kubernetes API's own models, the rest against our table of KubeRay's CRD fields.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from ntkdist.cli import build_parser
from ntkdist.config import load_config

KUBERAY = Path(__file__).resolve().parents[1] / "deploy" / "kuberay"


def test_the_rayjob_runs_ntkdist_on_the_raycluster_with_a_config_on_its_shared_volume():
    cluster = yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())
    job = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") == (cluster["apiVersion"], "RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "ntkdist"
    args = build_parser().parse_args(argv[1:])  # what the head pod will run parses as a run
    assert args.command == "run" and args.quiet
    mounts = {m["mountPath"] for m in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
              ["volumeMounts"]}
    assert any(args.config.startswith(mount + "/") for mount in mounts)  # the head can read the config
    config = load_config(KUBERAY / Path(args.config).name)
    assert config.cluster.address == "auto"  # joins the cluster the entrypoint runs in
    assert any(config.store_location.startswith(mount + "/") for mount in mounts)  # every pod sees the store
    workers = sum(group["maxReplicas"] for group in cluster["spec"]["workerGroupSpecs"])
    assert config.cluster.device == "gpu" and config.cluster.workers <= workers
