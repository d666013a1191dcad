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
