"""Whether the cluster can run what a config asks for, checked once connected and before any
work: a resource bundle (a teacher actor, a training worker, the evaluation task) that no node
and no node type of the autoscaler offers would wait forever in Ray's queue, and a local path on
a cluster of several machines would be missing on the nodes that read or write it.

The cluster's shape is read from Ray (its live nodes, and the node types that the autoscaler
published in the GCS); the checks are pure functions of it, so they are tested on shapes of
clusters this machine cannot start. Ray's v1 autoscaler (the default of ``ray up`` clusters and
``ray start --autoscaling-config``) publishes no node types: they are then read from the
cluster config its monitor process was started with, when the driver runs on the head (as a
``ray job submit`` driver does). Where neither can be read (a driver off the head, KubeRay's
autoscaler in its own container), resource requests are not checked: nothing can say what
the autoscaler may add, and refusing a run that would have been placed is worse than Ray's
own wait.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field

from xdistil_ray.run import storage
from xdistil_ray.config import EMBEDDED
from xdistil_ray.config import ConfigError

NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph",
                       "glusterfs", "9p", "virtiofs", "wekafs", "fuse")
"""Mount types whose files every machine of a cluster can see (a `fuse.*` mount: s3fs, gcsfuse,
JuiceFS, Alluxio... counts as one)."""


@dataclass(frozen=True)
class NodeShape:
    """A live node (``count`` 1) or an autoscaler node type (``count``: its most nodes)."""

    name: str
    resources: dict[str, float]
    count: int = 1


@dataclass
class ClusterShape:
    head_ip: str
    ips: frozenset[str]
    """The live nodes' addresses."""
    nodes: list[NodeShape] = field(default_factory=list)
    node_types: list[NodeShape] = field(default_factory=list)
    """What the autoscaler may add (node types that can have a node)."""
    node_types_known: bool = True
    """False where an autoscaler runs whose node types could not be read."""

    @property
    def machines(self) -> str:
        """`one` (every node is this machine's: the head is on loopback, or there is one node and
        nothing to add) or `several`."""
        if _is_loopback(self.head_ip):
            return "one"  # a head on loopback cannot be reached from another machine
        if len(self.ips) > 1 or any(t.count for t in self.node_types) \
                or not self.node_types_known:
            return "several"
        return "one"


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def snapshot() -> ClusterShape:
    """The connected cluster's shape."""
    import ray
    import ray._private.state

    alive = [n for n in ray.nodes() if n.get("Alive")]
    head = next((n for n in alive if "node:__internal_head__" in n.get("Resources", {})),
                alive[0] if alive else {})
    nodes = [NodeShape(n.get("NodeManagerAddress", "?"), dict(n.get("Resources", {})))
             for n in alive]
    types, known = [], True
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS, or none published: live nodes only
        config = None
    for group in (config.node_group_configs if config else []):
        if group.max_count != 0 and group.resources:
            types.append(NodeShape(group.name, dict(group.resources),
                                   group.max_count if group.max_count > 0 else 1 << 30))
    if config is None:
        monitor = monitor_args(ray.get_runtime_context().gcs_address)
        if monitor is None:  # the monitor is elsewhere: what it may add is unknown
            known = False
        elif monitor.get("autoscaling_config"):  # a v1 autoscaler with its node types
            types = node_types_of(os.path.expanduser(monitor["autoscaling_config"]))
            known = types is not None
            types = types or []
        # else: a cluster without an autoscaler (its monitor mirrors the live nodes)
    return ClusterShape(head.get("NodeManagerAddress", "127.0.0.1"),
                        frozenset(n.name for n in nodes), nodes, types, known)


def monitor_args(gcs_address: str) -> dict | None:
    """The arguments of the cluster's autoscaler monitor (Ray's ``monitor.py``) when it runs on
    this machine ({"autoscaling_config": path or None}); None when it does not."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info.get("cmdline") or []
        if not any(a.endswith("monitor.py") for a in args[:3]) \
                or f"--gcs-address={gcs_address}" not in args:
            continue
        config = next((a.split("=", 1)[1] for a in args
                       if a.startswith("--autoscaling-config=")), None)
        return {"autoscaling_config": config}
    return None


def node_types_of(path: str) -> list[NodeShape] | None:
    """The worker node types of a Ray cluster config (YAML: ``available_node_types``, their
    ``resources`` and ``max_workers``); None if it cannot be read."""
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
        head = config.get("head_node_type")
        return [NodeShape(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                          int(t.get("max_workers", config.get("max_workers", 0)) or 0))
                for name, t in (config.get("available_node_types") or {}).items()
                if name != head and (t.get("max_workers", 1) or 0) > 0]
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None


def bundles(cfg) -> dict[str, dict[str, float]]:
    """What each kind of the run's Ray work asks for, by the config fields that set it."""
    train = cfg.train
    asked = {}
    if hasattr(cfg, "teacher"):  # a distillation run (a fine-tuning job has no teacher)
        inf = cfg.teacher.inference
        asked["teacher.inference (each teacher actor)"] = {
            "CPU": inf.num_cpus_per_actor, "GPU": inf.num_gpus_per_actor, **inf.resources}
    asked |= {
        "train (each training worker)": {
            "CPU": train.cpus_per_worker, "GPU": 1.0 if train.use_gpu else 0.0,
            **train.resources_per_worker},
        "eval (the evaluation task)": {"CPU": cfg.eval.num_cpus, "GPU": cfg.eval.num_gpus},
    }
    return {k: {r: v for r, v in b.items() if v > 0} for k, b in asked.items()}


def unplaceable(shape: ClusterShape, bundle: dict[str, float]) -> str:
    """Why ``bundle`` fits on no node and no node type ('' if one takes it): the resources none
    offers at all, or (each offered somewhere) that none has them all together."""
    offers = shape.nodes + shape.node_types
    if any(all(n.resources.get(r, 0) >= v for r, v in bundle.items()) for n in offers):
        return ""
    missing = [r for r in sorted(bundle) if not any(n.resources.get(r, 0) > 0 for n in offers)]
    if missing:
        return f"no node and no node type of this cluster offers {', '.join(missing)}"
    return "no single node or node type of this cluster has all of it"


def local_paths(cfg) -> dict[str, str]:
    """The config's local paths that nodes other than the driver's read or write: the run
    folder, the corpus (read by Ray Data tasks), the teacher (loaded by its actors and the
    training workers); labeled splits are read by the driver."""
    paths = {"output": cfg.output}
    if hasattr(cfg, "teacher"):  # a fine-tuning job's model is read by its driver
        paths |= {"corpus.path": cfg.corpus.path, "teacher.model": cfg.teacher.model}
    found = {}
    for name, value in paths.items():
        if not value or value == EMBEDDED or storage.is_remote(value) \
                or value.startswith("hf:"):
            continue
        if name == "teacher.model" and not os.path.exists(value):
            continue  # a hub id (refused elsewhere when offline) or a name resolved to a package
        found[name] = os.path.abspath(value)
    return found


def mount_type(path: str, mounts: list[tuple[str, str]] | None = None) -> str:
    """The filesystem type of the mount that holds ``path`` (the longest mount point that
    contains it; ``mounts``: (mount point, type), read from /proc/mounts by default)."""
    if mounts is None:
        mounts = []
        try:
            with open("/proc/mounts") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        mounts.append((parts[1].replace("\\040", " "), parts[2]))
        except OSError:
            return ""
    path = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in mounts:
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fstype
    return kind


def _shared(path: str, mounts) -> bool:
    """Whether every node sees ``path``: on a network filesystem, or inside this Python
    environment (a package such as the embedded teacher's, installed on every node alike)."""
    kind = mount_type(path, mounts)
    if kind.split(".")[0] in NETWORK_FILESYSTEMS:
        return True
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(p).rstrip("/") + "/")
               for p in {sys.prefix, sys.base_prefix})


def check(cfg, shape: ClusterShape, mounts: list[tuple[str, str]] | None = None) -> None:
    """Raises ConfigError for work that could never be placed on ``shape``, or a local path
    that its other machines would not see."""
    # An autoscaler whose node types are unknown may add anything: nothing to refuse.
    bundles_checked = bundles(cfg) if shape.node_types_known else {}
    offered = sorted({r for n in shape.nodes + shape.node_types for r in n.resources
                      if not r.startswith("node:") and not r.startswith("accelerator_type")
                      and r not in ("memory", "object_store_memory")})
    for field_name, bundle in bundles_checked.items():
        why = unplaceable(shape, bundle)
        if why:
            asked = ", ".join(f"{r}: {bundle[r]:g}" for r in sorted(bundle))
            raise ConfigError(
                f"{field_name} asks for {{{asked}}}: {why}, so it would wait forever. The "
                f"cluster offers: {', '.join(offered) or 'nothing'}. Change the config, or add "
                "a node type with these resources to the cluster config")
    if shape.machines == "one":
        return
    for name, path in local_paths(cfg).items():
        if not _shared(path, mounts):
            raise ConfigError(
                f"{name}: {path!r} is a local path, but this cluster spans several machines "
                "whose nodes would not see it; use s3://... (or a path on a filesystem every "
                "node mounts: NFS, a FUSE mount of the bucket)")
