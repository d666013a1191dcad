import pytest

from xdistil_ray.run.markers import Marker, ShardMarker
from xdistil_ray.run.runfolder import MARKER, RunFolder


def test_commit_names_files_and_sizes(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    run.write_bytes("step/a.bin", b"12345")
    run.write_bytes("step/sub/b.bin", b"12")
    assert not run.is_complete("step")
    marker = run.commit("step", ShardMarker(rows=3))
    assert marker.files == {"a.bin": 5, "sub/b.bin": 2} and marker.rows == 3
    assert run.marker("step", ShardMarker) == marker and run.is_complete("step")
    assert [p.rsplit("/", 1)[1] for p in run.committed_files("step")] == ["a.bin", "b.bin"]


def test_readers_trust_only_committed_and_intact_files(tmp_path):
    run = RunFolder(str(tmp_path))
    run.write_bytes("s/a.bin", b"abc")
    with pytest.raises(FileNotFoundError, match=MARKER):
        run.committed_files("s")
    run.commit("s")
    run.write_bytes("s/a.bin", b"abcdef")  # changed after commit
    with pytest.raises(RuntimeError, match="a.bin: 6 bytes, COMPLETE says 3"):
        run.committed_files("s")


def test_download_subdir_and_upload_roundtrip(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    src = tmp_path / "src"
    (src / "model").mkdir(parents=True)
    (src / "model" / "w.bin").write_bytes(b"w")
    (src / "losses.json").write_text("{}")
    run.commit("stage", Marker(files=run.upload(str(src), "stage")))
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
    from xdistil_ray.run.steps import Runner as Steps

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
                          lambda fp: steps.run.commit("stages/1-x", Marker({}, fp)),
                          resumable=True)
    assert marker.fingerprint["stages.0.epochs"] == 1 and len(calls) == 1


def test_a_partial_checkpoint_is_never_loaded(tmp_path):
    import json

    from xdistil_ray.distill.checkpoint import PROGRESS_FILE, verify_checkpoint, write_rank_manifest

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


def _checkpoint(folder, step: int) -> None:
    import json

    from xdistil_ray.distill.checkpoint import PROGRESS_FILE, write_rank_manifest

    folder.mkdir(parents=True)
    (folder / "ds.pt").write_bytes(b"x" * (100 + step))
    (folder / PROGRESS_FILE).write_text(json.dumps({"step": step, "world_size": 1}))
    write_rank_manifest(str(folder), 0)


def test_a_bad_newest_checkpoint_gives_way_to_the_older_one(tmp_path, capsys):
    """Ray Train hands over its newest checkpoint; when that one is cut short (or unreadable),
    the stage resumes from the newest older one that is whole instead of failing on it at
    every retry, and from its start when none is."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from xdistil_ray.distill.checkpoint import read_progress, usable_checkpoint

    fs, root = pafs.LocalFileSystem(), tmp_path / "ray" / "run"
    for i, step in enumerate((50, 100, 150)):
        _checkpoint(root / f"checkpoint_2026-12-01_00-00-0{i}.000000", step)
    newest = Checkpoint(str(root / "checkpoint_2026-12-01_00-00-02.000000"), filesystem=fs)
    assert usable_checkpoint(newest) is newest
    (root / "checkpoint_2026-12-01_00-00-02.000000" / "ds.pt").write_bytes(b"x")  # cut
    chosen = usable_checkpoint(newest)
    assert read_progress(chosen)["step"] == 100
    out = capsys.readouterr().out
    assert "checkpoint_2026-12-01_00-00-02.000000 cannot be used (ds.pt of rank 0" in out
    assert "resuming from the older checkpoint checkpoint_2026-12-01_00-00-01" in out
    (root / "checkpoint_2026-12-01_00-00-01.000000" / "progress.json").write_text("{")
    assert read_progress(usable_checkpoint(newest))["step"] == 50
    (root / "checkpoint_2026-12-01_00-00-00.000000" / "files-rank0.json").unlink()
    assert usable_checkpoint(newest) is None
    assert "starts again from its initial weights" in capsys.readouterr().out


def test_relative_to_is_by_name():
    from xdistil_ray.run.runfolder import relative_to

    assert relative_to("bucket/run/data/a/b.parquet", "bucket/run/data") == "a/b.parquet"
    with pytest.raises(ValueError):
        relative_to("bucket/other/x", "bucket/run")


def test_a_field_added_since_a_step_committed_counts_as_its_default(tmp_path):
    """A run folder written before ``labeled.dev_fraction`` existed resumes while the field
    keeps its default, and is refused once it is set to another value."""
    from xdistil_ray.config import ConfigError
    from xdistil_ray.config import Config, flatten, to_dict
    from xdistil_ray.run.steps import refuse_changed

    run = RunFolder(str(tmp_path))
    defaults = flatten(to_dict(Config()))
    old = {"labeled.train": "a.jsonl"}  # the marker's fingerprint
    refuse_changed(run, "data", old, {"labeled.train": "a.jsonl",
                                      "labeled.dev_fraction": 0.1}, defaults=defaults)
    with pytest.raises(ConfigError, match="labeled.dev_fraction"):
        refuse_changed(run, "data", old, {"labeled.train": "a.jsonl",
                                          "labeled.dev_fraction": 0.2}, defaults=defaults)


@pytest.mark.parametrize("content", [b"", b'{"files": {"a.bin": 3', b"[1, 2]", b"\xff\xfe"])
def test_a_marker_that_does_not_parse_counts_as_absent(tmp_path, content, capsys):
    """An empty, cut or foreign COMPLETE / STARTED (a write cut short on a filesystem without
    atomic renames, a hand edit) means "not done": the step runs again, no JSONDecodeError."""
    from xdistil_ray.run.steps import Runner as Steps

    run = RunFolder(str(tmp_path))
    run.write_bytes("s/a.bin", b"abc")
    run.write_bytes(f"s/{MARKER}", content)
    run.write_bytes("s/STARTED", content)
    assert run.marker("s") is None and not run.is_complete("s")
    assert Steps(run).check("s", {"x": 1}) is None
    marker = Steps(run).ensure("s", {"x": 1}, lambda fp: run.commit("s", Marker(fingerprint=fp)),
                               resumable=True)
    assert marker.files["a.bin"] == 3 and run.marker("s").fingerprint == {"x": 1}
    assert run.started("s").fingerprint == {"x": 1}  # written anew


def test_a_complete_step_whose_file_was_cut_or_lost_runs_again(tmp_path, capsys):
    """Before a complete step is skipped, its files are checked against its marker: a file
    cut short (a truncated parquet shard) or gone names itself, and the step runs again from
    its inputs instead of every reader failing on it run after run."""
    from xdistil_ray.run.steps import Runner as Steps

    run, calls = RunFolder(str(tmp_path)), []

    def step(fp):
        calls.append(fp)
        run.write_bytes("data/shard-0.parquet", b"0123456789")
        run.write_bytes("data/shard-1.parquet", b"abcdef")
        return run.commit("data", Marker(fingerprint=fp))

    steps = Steps(run)
    steps.ensure("data", {"x": 1}, step)
    steps.ensure("data", {"x": 1}, step)
    assert len(calls) == 1  # intact: skipped
    run.write_bytes("data/shard-0.parquet", b"01234")  # truncated
    steps.ensure("data", {"x": 1}, step)
    out = capsys.readouterr().out
    assert len(calls) == 2 and "shard-0.parquet: 5 bytes, COMPLETE says 10" in out
    assert "running it again" in out and run.verify("data") == []
    run.delete("data/shard-1.parquet")
    steps.ensure("data", {"x": 1}, step)
    assert len(calls) == 3 and "shard-1.parquet: missing" in capsys.readouterr().out


def test_a_step_waits_out_a_storage_outage_and_runs_again(tmp_path, capsys):
    """A storage error that outlasted the requests' own retries (pyarrow's AWS error text,
    which a Ray task's error carries) makes the step wait until the store answers and run
    again, saying so; any other error stops the run as it did."""
    from xdistil_ray.run.steps import Runner as Steps

    run, calls = RunFolder(str(tmp_path)), []

    def flaky(fp):
        calls.append(fp)
        if len(calls) == 1:
            raise OSError("When reading information for key 'x' in bucket 'runs': AWS Error "
                          "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, "
                          "Couldn't connect to server")
        return run.commit("teacher", Marker({}, fp))

    marker = Steps(run).ensure("teacher", {"x": 1}, flaky, resumable=True)
    out = capsys.readouterr().out
    assert len(calls) == 2 and marker.fingerprint == {"x": 1}
    assert "teacher: waiting on storage (When reading information for key 'x'" in out
    assert "teacher: storage answers again after 0 s: resuming the step" in out

    def broken(fp):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        Steps(run).ensure("other", {"x": 1}, broken)


def test_an_upload_streams_a_file_instead_of_reading_it_whole(tmp_path):
    """``RunFolder.upload`` (a stage's final student, on the rank-0 worker) copies each file in
    chunks: uploading 256 MiB raises the process's peak memory by one or two chunks, where
    reading the file whole (the code before) raised it by the file's size (measured 2026-12-07:
    +16 MiB against +256 MiB; pyarrow's NativeFile.upload, tried first, queued 112-199 MiB for
    its writer thread)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "model.bin", "wb") as f:
        for _ in range(256):
            f.write(b"\x01" * (1 << 20))
    code = ("import resource, sys\n"
            "from xdistil_ray.run.runfolder import RunFolder\n"
            "run = RunFolder(sys.argv[1])\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "files = run.upload(sys.argv[2], 'model')\n"
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(files['model.bin'], (after - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(src)],
                         capture_output=True, text=True, check=True).stdout.split()
    size, grew_mib = int(out[0]), int(out[1])
    assert size == 256 << 20 == (tmp_path / "run" / "model" / "model.bin").stat().st_size
    assert grew_mib < 64, f"the upload raised peak memory by {grew_mib} MiB"
    assert not list((tmp_path / "run" / "model").glob("*.tmp-*"))
