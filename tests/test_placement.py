"""The cluster checks made once connected: work that no node or node type could ever place, and
local paths on a cluster of several machines (xdistil_ray/pipelines/placement.py)."""

import pytest

from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config
from xdistil_ray.modeling.models import resolve_teacher_path
from xdistil_ray.pipelines.placement import (ClusterShape, NodeShape, check, mount_type, node_types_of,
                                   snapshot)

LAPTOP = ClusterShape("127.0.0.1", frozenset({"127.0.0.1"}),
                      [NodeShape("127.0.0.1", {"CPU": 2.0, "memory": 8e9})])


def _autoscaling(head_ip: str) -> ClusterShape:
    """cluster/aws.yaml's shape at the start of a run: the head alone (no CPUs for work), and the
    node types the autoscaler may add."""
    return ClusterShape(head_ip, frozenset({head_ip}), [NodeShape(head_ip, {"CPU": 0.0})], [
        NodeShape("cpu", {"CPU": 16.0}, 8),
        NodeShape("teacher_gpu", {"CPU": 8.0, "GPU": 1.0, "teacher_gpu": 1.0}, 4),
        NodeShape("train_gpu", {"CPU": 48.0, "GPU": 4.0, "train_gpu": 4.0}, 2)])


def _cfg(tmp_path, *overrides):
    return load_config("jobs/configs/tiny.yaml", [f"output={tmp_path}/run", *overrides])


def test_the_embedded_default_fits_a_laptop(tmp_path):
    check(load_config(None, [f"output={tmp_path}/run"]), LAPTOP)


OFFERS_NO = "no node and no node type of this cluster offers"


@pytest.mark.parametrize("override, field, why", [
    ("teacher.inference.num_gpus_per_actor=1", "teacher.inference", f"{OFFERS_NO} GPU"),
    ("train.use_gpu=true", "train", f"{OFFERS_NO} GPU"),
    ("train.resources_per_worker={train_gpu: 1}", "train", f"{OFFERS_NO} train_gpu"),
    ("eval.num_cpus=4", "eval", "no single node or node type of this cluster has all of it"),
])
def test_work_no_node_could_take_is_refused_before_it_waits_forever(tmp_path, override, field,
                                                                    why):
    with pytest.raises(ConfigError, match=rf"^{field} .*asks for .*: {why}, so it would wait "
                                          r"forever\. The cluster offers: CPU"):
        check(_cfg(tmp_path, override), LAPTOP)


def test_node_types_the_autoscaler_may_add_count(tmp_path):
    shape = _autoscaling("127.0.0.1")
    check(_cfg(tmp_path, "teacher.inference.num_gpus_per_actor=0.5",
               "teacher.inference.resources={teacher_gpu: 0.5}", "train.use_gpu=true",
               "train.resources_per_worker={train_gpu: 1}"), shape)
    with pytest.raises(ConfigError, match=r"offers teacher_gpus, so .*offers: CPU, GPU, "
                                          r"teacher_gpu, train_gpu"):  # a typo in its name
        check(_cfg(tmp_path, "teacher.inference.resources={teacher_gpus: 1}"), shape)
    # GPU and teacher_gpu are each offered, but not together with 2 teacher_gpu on one node.
    with pytest.raises(ConfigError, match=r"no single node or node type .* has all of it"):
        check(_cfg(tmp_path, "teacher.inference.num_gpus_per_actor=1",
                   "teacher.inference.resources={teacher_gpu: 2}"), shape)


def test_local_paths_are_refused_on_a_cluster_of_several_machines(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a line\n")
    shape = _autoscaling("10.0.0.5")
    assert shape.machines == "several"
    with pytest.raises(ConfigError, match=r"^output: .* is a local path, but this cluster spans "
                                          r"several machines.*s3://"):
        check(_cfg(tmp_path, f"corpus.path={corpus}"), shape, mounts=[("/", "ext4")])
    with pytest.raises(ConfigError, match=r"^corpus.path: .*corpus.txt' is a local path"):
        check(_cfg(tmp_path, "output=s3://bucket/run", f"corpus.path={corpus}"), shape,
              mounts=[("/", "ext4")])
    # The same paths on an NFS or FUSE mount every node sees, and a teacher installed in the
    # environment (the embedded default's, from its package), are accepted.
    for kind in ("nfs4", "fuse.s3fs"):
        check(_cfg(tmp_path, f"corpus.path={corpus}"), shape,
              mounts=[("/", "ext4"), (str(tmp_path), kind)])
    remote = ["output=s3://bucket/run", "corpus.path=s3://bucket/corpus"]
    check(_cfg(tmp_path, *remote), shape, mounts=[("/", "ext4")])
    # A teacher folder of the user's is refused; one inside this Python environment (as the
    # embedded teacher's package) is installed on every node alike.
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    with pytest.raises(ConfigError, match=r"^teacher.model: .*teacher' is a local path"):
        check(_cfg(tmp_path, *remote, f"teacher.model={teacher}"), shape, mounts=[("/", "ext4")])
    check(_cfg(tmp_path, *remote, f"teacher.model={resolve_teacher_path('embedded')}"), shape,
          mounts=[("/", "ext4")])


def test_a_cluster_on_loopback_or_of_one_node_is_one_machine():
    assert _autoscaling("127.0.0.1").machines == "one"  # Ray's fake autoscaling cluster
    assert LAPTOP.machines == "one"
    one_remote = ClusterShape("10.0.0.5", frozenset({"10.0.0.5"}),
                              [NodeShape("10.0.0.5", {"CPU": 8.0})])
    assert one_remote.machines == "one"
    two = ClusterShape("10.0.0.5", frozenset({"10.0.0.5", "10.0.0.6"}), one_remote.nodes)
    assert two.machines == "several"


def test_mount_type_is_the_longest_mount_point_holding_the_path():
    mounts = [("/", "ext4"), ("/mnt", "tmpfs"), ("/mnt/shared", "nfs4"), ("/mnt/sharedx", "xfs")]
    assert mount_type("/mnt/shared/run", mounts) == "nfs4"
    assert mount_type("/mnt/sharedx/run", mounts) == "xfs"
    assert mount_type("/mnt/other", mounts) == "tmpfs"
    assert mount_type("/home/u", mounts) == "ext4"


@pytest.mark.integration
def test_the_local_rays_shape_is_read_and_checked(ray_local, tmp_path):
    shape = snapshot()
    assert shape.machines == "one" and shape.head_ip == "127.0.0.1"
    assert [n.resources["CPU"] for n in shape.nodes] == [2.0]
    check(_cfg(tmp_path), shape)
    with pytest.raises(ConfigError, match=r"teacher.inference .* offers GPU, so"):
        check(_cfg(tmp_path, "teacher.inference.num_gpus_per_actor=1"), shape)


def test_a_fine_tuning_job_is_checked_for_its_workers_and_output(tmp_path):
    from xdistil_ray.config import FinetuneJob

    cfg = load_config(None, [f"output={tmp_path}/run", f"model={tmp_path}"], kind=FinetuneJob)
    check(cfg, LAPTOP)  # its model is read by the driver: a local one is fine anywhere
    with pytest.raises(ConfigError, match=r"^output: .* is a local path"):
        check(cfg, _autoscaling("10.0.0.5"), mounts=[("/", "ext4")])
    with pytest.raises(ConfigError, match=r"^train .* offers GPU, so"):
        check(load_config(None, [f"model={tmp_path}", "train.use_gpu=true"], kind=FinetuneJob),
              LAPTOP)


def test_node_types_are_read_from_the_cluster_config_ray_up_leaves_on_the_head(tmp_path):
    """Ray's v1 autoscaler publishes no node types: they come from ~/ray_bootstrap_config.yaml
    (cluster/aws.yaml as ``ray up`` copies it)."""
    types = {t.name: t for t in node_types_of("cluster/aws.yaml")}
    assert "head" not in types and {"cpu", "teacher_gpu", "train_gpu"} <= set(types)
    assert types["teacher_gpu"].resources == {"CPU": 8.0, "GPU": 1.0, "teacher_gpu": 1.0}
    assert types["cpu"].count == 8
    assert node_types_of(str(tmp_path / "missing.yaml")) is None
    (tmp_path / "bad.yaml").write_text("available_node_types: [1, 2")
    assert node_types_of(str(tmp_path / "bad.yaml")) is None


def test_an_autoscaler_whose_node_types_are_unknown_refuses_no_resources(tmp_path):
    """A v1 autoscaler without the bootstrap config (``ray start --autoscaling-config``): it may
    add any node, so no request is refused; and it may add other machines."""
    head = NodeShape("10.0.0.5", {"CPU": 0.0})
    unknown = ClusterShape("10.0.0.5", frozenset({"10.0.0.5"}), [head], [],
                           node_types_known=False)
    assert unknown.machines == "several"
    check(_cfg(tmp_path, "output=s3://bucket/run", "corpus.path=s3://bucket/corpus",
               "train.resources_per_worker={train_gpu: 1}", "train.use_gpu=true"), unknown)
    loopback = ClusterShape("127.0.0.1", frozenset({"127.0.0.1"}), [head], [],
                            node_types_known=False)
    assert loopback.machines == "one"
    check(_cfg(tmp_path, "teacher.inference.num_gpus_per_actor=1"), loopback)
