"""KubeRay's RayCluster and RayJob (apiVersion ray.io/v1) as field tables, for `kube_schema.problems`.

Written in our own words by reading KubeRay v1's API types, from which controller-gen generates the CRDs in
ray-operator/config/crd/bases: ray-project/kuberay ray-operator/apis/ray/v1/raycluster_types.go at commit
3275ee09f6a6c899c37e82ea6349785536de6bd4 and rayjob_types.go at commit f6ef3f7b32639dc6555797512d7cb784bd436901,
with the generated ray.io_rayjobs.yaml at commit 007412988d067642eeb67f8b80c373fc9ab401dd for how they come out
(quantities int-or-string, int32 as integer). It is not a copy of either: it keeps each field's name, type, whether
a manifest must give it, and the values of the few string fields that take a fixed set; no descriptions, no
status. Everything that is a core Kubernetes type (pod templates, the head Service, env vars, resources) is
named by its `kubernetes.client` model and checked against the API's own schema. Later KubeRay adds fields and
values (e.g. submissionMode "SidecarMode"): add them here, naming the commit read, when a manifest needs them.

"Required" here means what a manifest must write: a field the CRD lists as required but gives a default
(a worker group's minReplicas, maxReplicas) is filled in by the API server, so it is optional here.
Allowed values come from KubeRay's constants (submissionMode, deletionPolicy, upscalingMode, managedBy) and from
Kubernetes' ServiceType (serviceType). The CRD enforces upscalingMode, managedBy and deletionPolicy itself; any
other submissionMode or serviceType gets past the CRD and fails later, in the operator or in the head Service.
"""

from __future__ import annotations

from .kube_schema import Field, problems

API_VERSION = "ray.io/v1"
INT32_MAX = 2**31 - 1  # KubeRay's default maxReplicas
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
MANAGERS = ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")


def custom_resource(kind: str) -> dict[str, Field]:
    """What every object of a KubeRay kind holds: its kind, metadata, and its spec (table `kind` + "Spec")."""
    return {
        "apiVersion": Field("str", required=True, allowed=(API_VERSION,)),
        "kind": Field("str", required=True, allowed=(kind,)),
        "metadata": Field("V1ObjectMeta", required=True),
        "spec": Field(f"{kind}Spec", required=True),
    }


TABLES: dict[str, dict[str, Field]] = {
    "RayCluster": custom_resource("RayCluster"),
    "RayClusterSpec": {
        "suspend": Field("bool"),
        "managedBy": Field("str", allowed=MANAGERS),
        "autoscalerOptions": Field("AutoscalerOptions"),
        "headServiceAnnotations": Field("dict[str, str]"),
        "enableInTreeAutoscaling": Field("bool"),
        "gcsFaultToleranceOptions": Field("GcsFaultToleranceOptions"),
        "headGroupSpec": Field("HeadGroupSpec", required=True),
        "rayVersion": Field("str"),
        "workerGroupSpecs": Field("list[WorkerGroupSpec]"),
    },
    "HeadGroupSpec": {
        "template": Field("V1PodTemplateSpec", required=True),
        "headService": Field("V1Service"),
        "enableIngress": Field("bool"),
        "rayStartParams": Field("dict[str, str]", required=True),
        "serviceType": Field("str", allowed=SERVICE_TYPES),
    },
    "WorkerGroupSpec": {
        "suspend": Field("bool"),
        "groupName": Field("str", required=True),
        "replicas": Field("int"),
        "minReplicas": Field("int"),
        "maxReplicas": Field("int"),
        "idleTimeoutSeconds": Field("int"),
        "rayStartParams": Field("dict[str, str]", required=True),
        "template": Field("V1PodTemplateSpec", required=True),
        "scaleStrategy": Field("ScaleStrategy"),
        "numOfHosts": Field("int"),
    },
    "ScaleStrategy": {
        "workersToDelete": Field("list[str]"),
    },
    "AutoscalerOptions": {
        "resources": Field("V1ResourceRequirements"),
        "image": Field("str"),
        "imagePullPolicy": Field("str"),
        "securityContext": Field("V1SecurityContext"),
        "idleTimeoutSeconds": Field("int"),
        "upscalingMode": Field("str", allowed=("Default", "Aggressive", "Conservative")),
        "env": Field("list[V1EnvVar]"),
        "envFrom": Field("list[V1EnvFromSource]"),
        "volumeMounts": Field("list[V1VolumeMount]"),
    },
    "GcsFaultToleranceOptions": {
        "redisUsername": Field("RedisCredential"),
        "redisPassword": Field("RedisCredential"),
        "externalStorageNamespace": Field("str"),
        "redisAddress": Field("str", required=True),
    },
    "RedisCredential": {
        "valueFrom": Field("V1EnvVarSource"),
        "value": Field("str"),
    },
    "RayJob": custom_resource("RayJob"),
    "RayJobSpec": {
        "activeDeadlineSeconds": Field("int"),
        "backoffLimit": Field("int"),
        "rayClusterSpec": Field("RayClusterSpec"),
        "submitterPodTemplate": Field("V1PodTemplateSpec"),
        "metadata": Field("dict[str, str]"),
        "clusterSelector": Field("dict[str, str]"),
        "submitterConfig": Field("SubmitterConfig"),
        "managedBy": Field("str", allowed=MANAGERS),
        "deletionPolicy": Field("str", allowed=("DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone")),
        "entrypoint": Field("str"),
        "runtimeEnvYAML": Field("str"),
        "jobId": Field("str"),
        "submissionMode": Field("str", allowed=("K8sJobMode", "HTTPMode", "InteractiveMode")),
        "entrypointResources": Field("str"),
        "entrypointNumCpus": Field("float"),
        "entrypointNumGpus": Field("float"),
        "ttlSecondsAfterFinished": Field("int"),
        "shutdownAfterJobFinishes": Field("bool"),
        "suspend": Field("bool"),
    },
    "SubmitterConfig": {
        "backoffLimit": Field("int"),
    },
}


def kuberay_problems(manifest: dict) -> list[str]:
    """Every way a RayCluster or RayJob manifest breaks the tables or the replica order, each naming its path."""
    kind = manifest.get("kind")
    if kind not in ("RayCluster", "RayJob"):
        return [f"kind: {kind!r} is neither RayCluster nor RayJob"]
    found = problems(manifest, kind, "", TABLES)
    if found:  # the replica order is only meaningful once the types are right
        return found
    spec = manifest["spec"]
    if kind == "RayCluster":
        return replica_order_problems(spec, "spec")
    return replica_order_problems(spec["rayClusterSpec"], "spec.rayClusterSpec") if "rayClusterSpec" in spec else []


def replica_order_problems(cluster_spec: dict, path: str) -> list[str]:
    """minReplicas ≤ replicas ≤ maxReplicas in each worker group, as the operator requires (unset ones at their
    defaults: 0, minReplicas, 2³¹ − 1)."""
    found = []
    for index, group in enumerate(cluster_spec.get("workerGroupSpecs", [])):
        low = group.get("minReplicas", 0)
        high = group.get("maxReplicas", INT32_MAX)
        replicas = group.get("replicas", low)
        if not low <= replicas <= high:
            found.append(f"{path}.workerGroupSpecs[{index}]: needs minReplicas ≤ replicas ≤ maxReplicas, "
                         f"got {low} ≤ {replicas} ≤ {high}")
    return found
