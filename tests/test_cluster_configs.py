"""The configs in cluster/: valid for Ray's autoscaler and for KubeRay, and locked down (no
credential, no public dashboard without authentication, token authentication never off)."""

import copy
import glob
import os
import random
import re
import string

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AWS = os.path.join(ROOT, "cluster", "aws.yaml")
KUBERAY = os.path.join(ROOT, "cluster", "kuberay")
NODE_TYPES = {"cpu", "teacher_gpu", "train_gpu"}


def _aws() -> dict:
    with open(AWS) as f:
        return yaml.safe_load(f)


def _validate(config: dict) -> None:
    """Ray's own validation of a launcher config (schema, node types), plus worker counts."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
    for name, node in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        if not 0 <= node["min_workers"] <= node["max_workers"] <= config["max_workers"]:
            raise ValueError(f"{name}: need 0 <= min_workers <= max_workers <= max_workers of "
                             "the cluster")


def test_aws_config_passes_rays_validation_and_has_the_three_worker_types():
    config = _aws()
    _validate(config)
    types = config["available_node_types"]
    assert set(types) - {config["head_node_type"]} == NODE_TYPES
    assert types[config["head_node_type"]]["resources"].get("CPU") == 0  # the head runs no work
    for name in NODE_TYPES:
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] >= 1
        assert types[name]["node_config"]["IamInstanceProfile"]["Name"]  # S3 through a role
    assert "GPU" in types["teacher_gpu"]["resources"] and "GPU" in types["train_gpu"]["resources"]
    for spot in ("teacher_gpu", "train_gpu"):
        assert types[spot]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert config["idle_timeout_minutes"] > 0
    assert any("pip install" in c and "-e \".[onnx,mlflow,wandb]\"" in c for c in config["setup_commands"])


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c.pop("head_node_type"), "head_node_type"),
    (lambda c: c["available_node_types"]["cpu"].update(max_workers="many"), "integer"),
    (lambda c: c.update(max_wrokers=3), "max_wrokers"),
    (lambda c: c["available_node_types"]["train_gpu"].update(min_workers=9), "min_workers"),
])
def test_a_broken_aws_config_is_refused(break_it, message):
    config = _aws()
    break_it(config)
    with pytest.raises(Exception, match=message):
        _validate(config)


def _manifests() -> dict[str, list[dict]]:
    out = {}
    for path in sorted(glob.glob(os.path.join(KUBERAY, "*.yaml"))):
        with open(path) as f:
            out[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d]
    return out


def _of_kind(kind: str) -> list[dict]:
    return [d for docs in _manifests().values() for d in docs if d.get("kind") == kind]


def test_kuberay_cluster_autoscales_three_worker_groups():
    (cluster,) = _of_kind("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "teacher-gpu", "train-gpu"}
    for group in groups.values():
        assert 0 == group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] and container["resources"]["limits"]
    for name in ("teacher-gpu", "train-gpu"):
        limits = groups[name]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
    assert check_gpu_pods_have_shm([cluster]) == []


def check_gpu_pods_have_shm(docs: list[dict]) -> list[str]:
    """GPU pods mount a memory-backed /dev/shm (NCCL needs more than a pod's 64 MB)."""
    problems = []
    for doc in docs:
        for group in doc.get("spec", {}).get("workerGroupSpecs", []):
            pod = group["template"]["spec"]
            (container,) = pod["containers"]
            if "nvidia.com/gpu" not in container["resources"].get("limits", {}):
                continue
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounts = [m for m in container.get("volumeMounts", [])
                      if m["mountPath"] == "/dev/shm"]
            if not mounts or volumes.get(mounts[0]["name"], {}).get("emptyDir", {}).get(
                    "medium") != "Memory":
                problems.append(f"{group['groupName']}: no memory-backed /dev/shm")
    return problems


def test_one_pinned_set_of_versions_installs_everywhere():
    """setup.sh (CI), the launcher's setup commands and the image install with constraints.txt,
    which pins every package (a node joining weeks later gets what the others run), and the
    image's Ray, the RayCluster's rayVersion and the pin agree."""
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        pins = dict(line.strip().split("==", 1) for line in f
                    if "==" in line and not line.startswith("#"))
    for name in ("ray", "torch", "deepspeed", "transformers", "pyarrow", "datasets", "boto3"):
        assert name in pins, name
    assert "+" not in pins["torch"]  # CPU and CUDA builds both satisfy it
    with open(os.path.join(ROOT, "scripts", "setup.sh")) as f:
        assert "-c constraints.txt" in f.read()
    assert any("-c constraints.txt" in c for c in _aws()["setup_commands"])
    with open(os.path.join(KUBERAY, "Dockerfile")) as f:
        dockerfile = f.read()
    assert "-c constraints.txt" in dockerfile
    assert re.search(r"FROM rayproject/ray:(\S+?)-", dockerfile).group(1) == pins["ray"]
    (cluster,) = _of_kind("RayCluster")
    assert cluster["spec"]["rayVersion"] == pins["ray"]


def test_kuberay_job_submits_the_pipeline_to_that_cluster():
    (cluster,) = _of_kind("RayCluster")
    (job,) = _of_kind("RayJob")
    spec = job["spec"]
    assert "jobs/distill.py" in spec["entrypoint"] and "--config" in spec["entrypoint"]
    assert re.search(r"output=s3://\S+", spec["entrypoint"])
    assert spec["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]


# ---------------------------------------------------------------------- security

_SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"(?i)(aws_)?secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}"),
    re.compile(r"(?i)(secretKey|password|passwd)\s*[:=]\s*['\"]?\S{6,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"RAY_AUTH_TOKEN\s*=\s*['\"]?[A-Za-z0-9]{16,}"),
]


def _cluster_files() -> list[str]:
    files = [p for p in glob.glob(os.path.join(ROOT, "cluster", "**", "*"), recursive=True)
             if os.path.isfile(p)]
    assert len(files) >= 4
    return files


def check_no_credentials(text: str) -> list[str]:
    return [p.pattern for p in _SECRET_PATTERNS if p.search(text)]


def check_env_token_values(docs: list[dict]) -> list[str]:
    """Tokens and AWS keys in Kubernetes env entries must come from a secret, never a value."""
    bad = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") in ("RAY_AUTH_TOKEN", "AWS_ACCESS_KEY_ID",
                                    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") \
                    and "value" in node:
                bad.append(node["name"])
            if node.get("name") == "RAY_AUTH_MODE" and node.get("value") != "token":
                bad.append("RAY_AUTH_MODE")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(docs)
    return bad


def check_aws_lockdown(config: dict) -> list[str]:
    problems = []
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in starts:
        if "ray start" in command and "RAY_AUTH_MODE=token" not in command:
            problems.append(f"no token authentication: {command[:60]}")
    commands = " ".join(starts)
    head = " ".join(config["head_start_ray_commands"])
    host = re.search(r"--dashboard-host[= ](\S+)", head)
    if not host or host.group(1) not in ("127.0.0.1", "localhost"):
        problems.append("the dashboard must listen on the head's loopback (SSH tunnel)")
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        if not rule["FromPort"] == rule["ToPort"] == 22:
            problems.append(f"port {rule['FromPort']} open beyond SSH")
        for r in rule.get("IpRanges", []) + rule.get("Ipv6Ranges", []):
            if r.get("CidrIp", r.get("CidrIpv6")) in ("0.0.0.0/0", "::/0"):
                problems.append(f"port {rule['FromPort']} open to the world")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["node_config"]["IamInstanceProfile"]["Name"]
    for name, node in types.items():
        if name != config["head_node_type"] and \
                node["node_config"]["IamInstanceProfile"]["Name"] == head:
            problems.append(f"{name} shares the head's instance profile (EC2 and PassRole "
                            "rights on machines that run user code)")
    if "disabled" in commands.lower():
        problems.append("authentication disabled")
    return problems


def check_kuberay_lockdown(docs: list[dict]) -> list[str]:
    problems = []
    for doc in docs:
        spec = doc.get("spec", {})
        head = spec.get("headGroupSpec")
        if doc.get("kind") == "RayCluster" and spec.get("authOptions", {}).get("mode") != "token":
            problems.append("RayCluster without authOptions.mode: token (the operator sets "
                            "the token on every pod and authenticates its own calls)")
        if head:
            public = head.get("rayStartParams", {}).get("dashboard-host") not in (
                None, "127.0.0.1", "localhost")
            if head.get("serviceType", "ClusterIP") != "ClusterIP":
                problems.append(f"head service {head['serviceType']} exposes the dashboard")
            if public and spec.get("authOptions", {}).get("mode") != "token":
                problems.append("dashboard on the pod network without token authentication")
        if doc.get("kind") in ("Service", "Ingress") and (
                doc.get("kind") == "Ingress" or spec.get("type") in ("LoadBalancer", "NodePort")):
            problems.append(f"{doc['kind']} {doc['metadata']['name']} exposes the cluster")
    return problems + check_env_token_values(docs)


def test_cluster_configs_hold_no_credential():
    for path in _cluster_files():
        with open(path, errors="replace") as f:
            assert check_no_credentials(f.read()) == [], path


def test_cluster_configs_keep_the_dashboard_private_and_authentication_on():
    assert check_aws_lockdown(_aws()) == []
    docs = [d for ds in _manifests().values() for d in ds]
    assert check_kuberay_lockdown(docs) == []


def test_the_security_checks_catch_what_they_are_for():
    """Each check fails on a config that breaks its rule (a check that cannot fail is no check)."""
    fake_id = "AKIA" + "".join(random.choices(string.ascii_uppercase + string.digits, k=16))
    fake_secret = "".join(random.choices(string.ascii_letters + string.digits + "/+", k=40))
    assert check_no_credentials(f"key: {fake_id}")
    assert check_no_credentials(f"aws_secret_access_key: {fake_secret}")
    open_dashboard = _aws()
    open_dashboard["head_start_ray_commands"] = [c.replace("--dashboard-host=127.0.0.1",
                                                           "--dashboard-host=0.0.0.0")
                                                 for c in open_dashboard["head_start_ray_commands"]]
    assert check_aws_lockdown(open_dashboard)
    no_token = _aws()
    no_token["worker_start_ray_commands"] = [c.replace("RAY_AUTH_MODE=token ", "")
                                             for c in no_token["worker_start_ray_commands"]]
    assert check_aws_lockdown(no_token)
    open_port = _aws()
    open_port["provider"]["security_group"]["IpPermissions"].append(
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    assert check_aws_lockdown(open_port)
    docs = [d for ds in _manifests().values() for d in ds]
    exposed = copy.deepcopy(docs)
    for d in exposed:
        if d["kind"] == "RayCluster":
            d["spec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"
    assert check_kuberay_lockdown(exposed)
    inline = copy.deepcopy(docs)
    for d in inline:
        if d["kind"] == "RayJob":
            d["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"][1] = {
                "name": "RAY_AUTH_TOKEN", "value": "abc"}
    assert check_kuberay_lockdown(inline) == ["RAY_AUTH_TOKEN"]
    disabled = copy.deepcopy(docs)
    for d in disabled:
        if d["kind"] == "RayCluster":
            d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"] = [
                {"name": "RAY_AUTH_MODE", "value": "disabled"}]
    assert check_kuberay_lockdown(disabled)
    no_auth_options = copy.deepcopy(docs)
    for d in no_auth_options:
        if d["kind"] == "RayCluster":
            d["spec"].pop("authOptions")
    assert check_kuberay_lockdown(no_auth_options)
    world_ssh = _aws()
    world_ssh["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = \
        "0.0.0.0/0"
    assert check_aws_lockdown(world_ssh) == ["port 22 open to the world"]
    one_profile = _aws()
    one_profile["available_node_types"]["cpu"]["node_config"]["IamInstanceProfile"]["Name"] = \
        "xdistil-ray-head"
    assert check_aws_lockdown(one_profile)
    no_shm = copy.deepcopy(_of_kind("RayCluster"))
    no_shm[0]["spec"]["workerGroupSpecs"][2]["template"]["spec"].pop("volumes")
    assert check_gpu_pods_have_shm(no_shm) == ["train-gpu: no memory-backed /dev/shm"]
