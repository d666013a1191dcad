import pytest

from xdistil_ray.runfolder import MARKER, RunFolder


def test_commit_names_files_and_sizes(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    run.write_bytes("step/a.bin", b"12345")
    run.write_bytes("step/sub/b.bin", b"12")
    assert not run.is_complete("step")
    marker = run.commit("step", rows=3)
    assert marker["files"] == {"a.bin": 5, "sub/b.bin": 2} and marker["rows"] == 3
    assert run.is_complete("step")
    assert [p.rsplit("/", 1)[1] for p in run.committed_files("step")] == ["a.bin", "b.bin"]


def test_readers_trust_only_committed_and_intact_files(tmp_path):
    run = RunFolder(str(tmp_path))
    run.write_bytes("s/a.bin", b"abc")
    with pytest.raises(FileNotFoundError, match=MARKER):
        run.committed_files("s")
    run.commit("s")
    run.write_bytes("s/a.bin", b"abcdef")  # changed after commit
    with pytest.raises(RuntimeError, match="3 bytes"):
        run.committed_files("s")


def test_download_subdir_and_upload_roundtrip(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    src = tmp_path / "src"
    (src / "model").mkdir(parents=True)
    (src / "model" / "w.bin").write_bytes(b"w")
    (src / "losses.json").write_text("{}")
    run.commit("stage", run.upload(str(src), "stage"))
    out = run.download("stage", str(tmp_path / "out"), "model")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["w.bin"]
    assert out == str(tmp_path / "out")


def test_write_is_atomic_no_temp_left(tmp_path):
    run = RunFolder(str(tmp_path))
    run.write_json("x/m.json", {"a": 1})
    assert run.read_json("x/m.json") == {"a": 1}
    assert list(run.list_files("x")) == ["m.json"]


def test_a_half_done_resumable_step_refuses_a_changed_config(tmp_path):
    from xdistil_ray.config import ConfigError
    from xdistil_ray.pipeline import Steps

    steps = Steps(RunFolder(str(tmp_path)))
    calls = []

    def crash(fp):
        calls.append(fp)
        raise KeyboardInterrupt  # the driver dies mid-step

    with pytest.raises(KeyboardInterrupt):
        steps.ensure("stages/1-x", {"stages.0.epochs": 1, "train.num_workers": 2}, crash,
                     resumable=True)
    with pytest.raises(ConfigError, match="half done.*stages.0.epochs"):
        steps.ensure("stages/1-x", {"stages.0.epochs": 2}, crash, resumable=True)
    marker = steps.ensure("stages/1-x", {"stages.0.epochs": 1, "train.num_workers": 2},
                          lambda fp: steps.run.commit("stages/1-x", {}, fingerprint=fp),
                          resumable=True)
    assert marker["fingerprint"]["stages.0.epochs"] == 1 and len(calls) == 1


def test_a_partial_checkpoint_is_never_loaded(tmp_path):
    import json

    from xdistil_ray.checkpoint import PROGRESS_FILE, verify_checkpoint, write_rank_manifest

    for rank in (0, 1):
        (tmp_path / f"shard{rank}.pt").write_bytes(b"x" * (10 + rank))
    (tmp_path / PROGRESS_FILE).write_text(json.dumps({"step": 5, "history": [], "world_size": 2}))
    write_rank_manifest(str(tmp_path), 0)
    with pytest.raises(RuntimeError, match="rank 1 wrote no manifest"):
        verify_checkpoint(str(tmp_path))
    write_rank_manifest(str(tmp_path), 1)
    assert verify_checkpoint(str(tmp_path))["step"] == 5
    (tmp_path / "shard1.pt").write_bytes(b"x")  # truncated upload
    with pytest.raises(RuntimeError, match=r"shard1.pt of rank \d is missing or truncated"):
        verify_checkpoint(str(tmp_path))



def test_relative_to_is_by_name():
    from xdistil_ray.runfolder import relative_to

    assert relative_to("bucket/run/data/a/b.parquet", "bucket/run/data") == "a/b.parquet"
    with pytest.raises(ValueError):
        relative_to("bucket/other/x", "bucket/run")


def test_a_field_added_since_a_step_committed_counts_as_its_default(tmp_path):
    """A run folder written before ``labeled.dev_fraction`` existed resumes while the field
    keeps its default, and is refused once it is set to another value."""
    from xdistil_ray.config import ConfigError
    from xdistil_ray.pipeline import refuse_changed

    run = RunFolder(str(tmp_path))
    marker = {"fingerprint": {"labeled.train": "a.jsonl"}}
    refuse_changed(run, "data", marker, {"labeled.train": "a.jsonl",
                                         "labeled.dev_fraction": 0.1})
    with pytest.raises(ConfigError, match="labeled.dev_fraction"):
        refuse_changed(run, "data", marker, {"labeled.train": "a.jsonl",
                                             "labeled.dev_fraction": 0.2})
