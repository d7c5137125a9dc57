"""The KubeRay manifests validate against the schema: their pod templates against the Kubernetes API's own models
(tests/kube_schema.py), the rest against our table of KubeRay's RayCluster and RayJob (tests/kuberay_schema.py).

The negative cases prove the validator can fail: each breaks a copy of a manifest in one way and expects one
problem, naming the path of the mistake.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .kuberay_schema import kuberay_problems

KUBERAY = Path(__file__).resolve().parents[1] / "deploy" / "kuberay"
HEAD_CONTAINER = "spec.headGroupSpec.template.spec.containers[0]"


def load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_the_manifests_validate(name):
    assert kuberay_problems(load(name)) == []


def misspell_a_container_key(cluster):
    container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")


def quote_the_replicas(cluster):
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = "2"


def drop_a_container_name(cluster):
    del cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]


def count_quantities_as_numbers(cluster):
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 4


def ask_for_an_unknown_service_type(cluster):
    cluster["spec"]["headGroupSpec"]["serviceType"] = "Ingress"


def put_replicas_above_their_maximum(cluster):
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = 17


def drop_the_worker_template(cluster):
    del cluster["spec"]["workerGroupSpecs"][0]["template"]


@pytest.mark.parametrize(("breaks", "expected"), [
    (misspell_a_container_key, f"{HEAD_CONTAINER}.volumeMount: unknown field of V1Container"),
    (quote_the_replicas, "spec.workerGroupSpecs[0].replicas: expected int, got str '2'"),
    (drop_a_container_name, f"{HEAD_CONTAINER}.name: required by V1Container, missing"),
    (count_quantities_as_numbers, f"{HEAD_CONTAINER}.resources.limits.cpu: expected str, got int 4"),
    (ask_for_an_unknown_service_type,
     "spec.headGroupSpec.serviceType: 'Ingress' is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
    (put_replicas_above_their_maximum,
     "spec.workerGroupSpecs[0]: needs minReplicas ≤ replicas ≤ maxReplicas, got 0 ≤ 17 ≤ 16"),
    (drop_the_worker_template, "spec.workerGroupSpecs[0].template: required by WorkerGroupSpec, missing"),
])
def test_a_broken_raycluster_is_refused_at_the_path_of_its_mistake(breaks, expected):
    cluster = load("raycluster.yaml")
    breaks(cluster)
    assert kuberay_problems(cluster) == [expected]


def add_an_unknown_spec_key(job):
    job["spec"]["shutdownAfterJobFinish"] = True  # the real key ends in "Finishes"


def ask_for_an_unknown_submission_mode(job):
    job["spec"]["submissionMode"] = "K8sMode"


def give_a_boolean_deadline(job):
    job["spec"]["activeDeadlineSeconds"] = True


def name_another_kind(job):
    job["kind"] = "RayJobs"


@pytest.mark.parametrize(("breaks", "expected"), [
    (add_an_unknown_spec_key, "spec.shutdownAfterJobFinish: unknown field of RayJobSpec"),
    (ask_for_an_unknown_submission_mode,
     "spec.submissionMode: 'K8sMode' is not one of K8sJobMode, HTTPMode, InteractiveMode"),
    (give_a_boolean_deadline, "spec.activeDeadlineSeconds: expected int, got bool True"),
    (name_another_kind, "kind: 'RayJobs' is neither RayCluster nor RayJob"),
])
def test_a_broken_rayjob_is_refused_at_the_path_of_its_mistake(breaks, expected):
    job = load("rayjob.yaml")
    breaks(job)
    assert kuberay_problems(job) == [expected]


def test_a_rayjob_that_brings_its_own_cluster_has_its_templates_and_replicas_checked():
    job = load("rayjob.yaml")
    del job["spec"]["clusterSelector"]
    job["spec"]["rayClusterSpec"] = load("raycluster.yaml")["spec"]
    assert kuberay_problems(job) == []
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["minReplicas"] = 8
    group["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountpath"] = "/data"
    assert kuberay_problems(job) == [
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].volumeMounts[0].mountpath: "
        "unknown field of V1VolumeMount"]
    del group["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountpath"]
    assert kuberay_problems(job) == [
        "spec.rayClusterSpec.workerGroupSpecs[0]: needs minReplicas ≤ replicas ≤ maxReplicas, got 8 ≤ 4 ≤ 16"]
