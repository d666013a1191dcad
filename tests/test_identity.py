"""Inputs replaced at the same path are refused like any other change (xdistil_ray/run/identity.py)."""

import os
import time

import pytest

from xdistil_ray.run import identity
from xdistil_ray.config import ConfigError
from xdistil_ray.config import flatten, to_dict
from xdistil_ray.run.steps import Runner as Steps
from xdistil_ray.run.steps import fingerprint as flat_fingerprint
from xdistil_ray.run.steps import refuse_changed
from xdistil_ray.data.readers import resolve_source
from xdistil_ray.run.markers import Marker
from xdistil_ray.run.runfolder import RunFolder


def test_an_input_identity_follows_its_content_not_its_path(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("one\ntwo\n")
    first = identity.of_source(resolve_source(str(path), "corpus.path"), str(path))
    assert first.startswith("1 files, 8 bytes, ")
    os.utime(path, (time.time() + 100, time.time() + 100))  # touched, same bytes: same input
    assert identity.of_source(resolve_source(str(path), "corpus.path"), str(path)) == first
    path.write_text("one\nTWO\n")  # same size, other content
    assert identity.of_source(resolve_source(str(path), "corpus.path"), str(path)) != first
    assert identity.of_source(None, "embedded") == "embedded"


def test_large_inputs_are_known_by_size_and_time_past_the_hash_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "HASH_LIMIT", 10)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("12345\n")  # hashed (6 bytes of the 10)
    (folder / "b.txt").write_text("abcdefgh\n")  # past the budget: size and mtime
    src = resolve_source(str(folder), "corpus.path")
    first = identity.of_source(src, str(folder))
    os.utime(folder / "b.txt", (1, 1))
    assert identity.of_source(src, str(folder)) != first


def test_a_corpus_replaced_at_the_same_path_is_refused(tmp_path):
    """The data step's fingerprint holds the corpus's identity: the same config over other
    files stops with both identities named, before any work."""
    from xdistil_ray.data.step import DataStep
    from xdistil_ray.config import load_config

    path = tmp_path / "corpus.txt"
    path.write_text("a first corpus\n")
    cfg = load_config(None, [f"output={tmp_path}/run", f"corpus.path={path}"])
    src = resolve_source(str(path), "corpus.path")
    ids = {"corpus.path.content": identity.of_source(src, str(path))}
    run = RunFolder(cfg.output)
    run.commit("data", Marker({}, fingerprint(cfg, *DataStep.keys, inputs=ids)))
    Steps(run, ids).check("data", fingerprint(cfg, *DataStep.keys, inputs=ids))  # unchanged
    path.write_text("another corpus, same path\n")
    new = {"corpus.path.content": identity.of_source(src, str(path))}
    with pytest.raises(ConfigError, match=r"corpus.path \(same path, other files: 1 files, 15 "
                                          r"bytes, \w+ then, 1 files, 26 bytes"):
        Steps(run, new).check("data", fingerprint(cfg, *DataStep.keys, inputs=new))
    old = fingerprint(cfg, *DataStep.keys)  # a marker's, written before identities
    refuse_changed(run, "data", old, fingerprint(cfg, *DataStep.keys, inputs=new))


def test_the_same_files_elsewhere_have_the_same_identity(tmp_path):
    """An input's identity is its files' names below its root, sizes and content: a copy at
    another path is the same input (the path itself is a config field, checked as such)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-0.txt").write_text("same rows\n")
    ids = {identity.of_source(resolve_source(str(tmp_path / n), "corpus.path"), "x")
           for n in ("a", "b")}
    files = {identity.of_source(resolve_source(str(tmp_path / n / "part-0.txt"), "corpus.path"),
                                "x") for n in ("a", "b")}
    assert len(ids) == 1 and len(files) == 1


def test_a_model_replaced_at_the_same_path_refuses_the_fine_tuning_job(tmp_path):
    """jobs/finetune.py's steps hold the model's and the labeled splits' identities: a student
    exported again to the same folder is refused before any work."""
    from xdistil_ray.pipelines import finetune
    from xdistil_ray.config import FinetuneJob
    from xdistil_ray.config import load_config

    model = tmp_path / "student"
    model.mkdir()
    (model / "config.json").write_text('{"num_hidden_layers": 2}')
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    cfg = load_config(None, [f"output={tmp_path}/run", f"model={model}"], kind=FinetuneJob)
    run = RunFolder(cfg.output)
    sources = finetune._labeled_sources(run, cfg)
    assert set(sources) == {"train", "dev"}  # the embedded splits, written into the run
    ids = finetune._identities(cfg, str(model), sources)
    assert set(ids) == {"model.content", "labeled.train.content", "labeled.dev.content"}
    run.commit("data", Marker({}, fingerprint(cfg, *finetune._DATA_KEYS, inputs=ids)))
    assert finetune._identities(cfg, str(model), finetune._labeled_sources(run, cfg)) == ids
    (model / "model.safetensors").write_bytes(b"\x01" * 64)  # new weights, same size
    new = finetune._identities(cfg, str(model), sources)
    with pytest.raises(ConfigError, match=r"model \(same path, other files"):
        Steps(run, new).check("data", fingerprint(cfg, *finetune._DATA_KEYS, inputs=new))


def fingerprint(cfg, *sections: str, inputs: dict | None = None) -> dict:
    """A step's fingerprint of ``cfg`` (as the runner's context builds it)."""
    return flat_fingerprint(flatten(to_dict(cfg)), *sections, inputs=inputs)
