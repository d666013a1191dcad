"""Run folders and inputs in object storage, against a real S3 server (SeaweedFS, keys enforced)."""

import pickle
import threading
import time
import uuid

import pytest
from s3server import ACCESS_KEY, SECRET_KEY

from xdistil_ray.run import storage
from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config
from xdistil_ray.data.readers import load_records, resolve_source
from xdistil_ray.run.markers import ShardMarker
from xdistil_ray.run.runfolder import MARKER, RunFolder
from xdistil_ray.run.storage import StorageError, StorageOptions


def test_uris_with_credentials_are_refused():
    for uri in ("s3://KEY:SECRET@bucket/run", "s3://bucket/run?secret_key=abc",
                "s3://bucket/run?access_key=abc"):
        with pytest.raises(ConfigError, match="credentials do not belong"):
            load_config(None, [f"output={uri}"])
    with pytest.raises(ConfigError, match="storage.endpoint"):
        load_config(None, ["output=s3://bucket/run", "storage.endpoint=http://k:s@host:9000"])
    with pytest.raises(ConfigError, match="names no bucket"):
        load_config(None, ["output=s3:///run"])


def test_local_paths_stay_local(tmp_path):
    run = RunFolder(f"file://{tmp_path}/run")
    assert run.is_local and run.uri == f"{tmp_path}/run"


@pytest.fixture
def options(s3):
    return StorageOptions(endpoint=s3.endpoint)


@pytest.fixture
def s3_run(options):
    return RunFolder(f"s3://runs/unit-{uuid.uuid4().hex[:8]}", options)


@pytest.mark.integration
def test_run_folder_commits_and_reads_on_s3(s3_run, tmp_path):
    run = s3_run
    assert not run.is_local
    run.write_json("step/a.json", {"x": 1})
    run.write_bytes("step/sub/b.bin", b"\x00" * 1000)
    assert run.marker("step") is None
    with pytest.raises(FileNotFoundError, match="not complete"):
        run.committed_files("step")
    marker = run.commit("step", ShardMarker(rows=2))
    assert marker.files == {"a.json": 12, "sub/b.bin": 1000}
    assert run.marker("step", ShardMarker).rows == 2
    assert len(run.committed_files("step")) == 2
    run.write_bytes("step/leftover.bin", b"junk")  # not named by the marker: never read
    out = run.download("step", str(tmp_path / "copy"))
    assert sorted(p.name for p in (tmp_path / "copy").rglob("*") if p.is_file()) == [
        "a.json", "b.bin"]
    assert out == str(tmp_path / "copy")
    # A file that the marker names but that changed size is refused.
    run.write_bytes("step/a.json", b"{}")
    with pytest.raises(RuntimeError, match="a.json: 2 bytes, COMPLETE says 12"):
        run.committed_files("step")
    run.delete("step")
    assert not run.exists("step", MARKER)


@pytest.mark.integration
def test_an_upload_larger_than_a_part_streams_to_s3_whole(s3_run, tmp_path):
    """RunFolder.upload writes in chunks (a multipart upload in S3): a file of several parts
    arrives whole, byte for byte, and its marker names its size."""
    import hashlib

    src = tmp_path / "model"
    src.mkdir()
    data = hashlib.sha256(b"0").digest() * (24 * (1 << 20) // 32 + 5)  # 24 MiB and a bit
    (src / "model.safetensors").write_bytes(data)
    files = s3_run.upload(str(src), "stage/model")
    assert files == {"model.safetensors": len(data)}
    s3_run.commit("stage", ShardMarker(files={f"model/{k}": v for k, v in files.items()}))
    assert s3_run.verify("stage") == []
    assert s3_run.read_bytes("stage/model/model.safetensors") == data


@pytest.mark.integration
def test_run_folder_pickles_without_credentials(s3_run):
    blob = pickle.dumps(s3_run)
    assert SECRET_KEY.encode() not in blob and ACCESS_KEY.encode() not in blob
    again = pickle.loads(blob)
    again.write_text("hello.txt", "hi")
    assert s3_run.read_bytes("hello.txt") == b"hi"


@pytest.mark.integration
def test_inputs_read_from_s3(s3_run, options):
    run = s3_run
    run.write_bytes("inputs/corpus/a.txt", b"one\ntwo\n")
    run.write_bytes("inputs/corpus/b.txt", b"three")
    run.write_bytes("inputs/train.jsonl", b'{"text": "x", "label": "pos"}\n')
    source = resolve_source(run.uri_of("inputs/corpus"), "corpus.path", options)
    assert source.fmt == "txt" and [f.rsplit("/", 1)[1] for f in source.files] == ["a.txt", "b.txt"]
    rows, encoding = load_records(resolve_source(run.uri_of("inputs/train.jsonl"),
                                                 "labeled.train", options),
                                  columns=["text", "label"])
    assert encoding == "jsonl" and rows == [b'{"text": "x", "label": "pos"}']
    with pytest.raises(ConfigError, match="corpus.path.*does not exist"):
        resolve_source(run.uri_of("inputs/missing"), "corpus.path", options)


@pytest.mark.integration
def test_a_saved_dataset_dict_read_from_s3(s3_run, options, tmp_path):
    """A `save_to_disk` folder copied to a bucket: its split's arrow files (the corpus streams
    them) and its ClassLabel names (labeled data), without `datasets` reaching the bucket."""
    import datasets

    from xdistil_ray.data.readers import data_files

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features),
        "validation": datasets.Dataset.from_dict({"text": ["c"], "label": [1]}, features=features),
    }).save_to_disk(str(tmp_path / "saved"))
    for path in sorted((tmp_path / "saved").rglob("*")):
        if path.is_file():
            s3_run.write_bytes(f"inputs/saved/{path.relative_to(tmp_path / 'saved')}",
                               path.read_bytes())
    uri = s3_run.uri_of("inputs/saved")
    dev = resolve_source(uri, "labeled.dev", options, split="validation")
    assert dev.kind == "hf_disk"
    assert load_records(dev, columns=["text", "label"])[0] == [{"text": "c", "label": "pos"}]
    files = data_files(resolve_source(uri, "corpus.path", options))
    assert files.fmt == "arrow" and files.files[0].endswith("train/data-00000-of-00001.arrow")
    with pytest.raises(ConfigError, match="no split 'test'"):
        data_files(resolve_source(uri, "corpus.path", options, split="test"))


@pytest.mark.integration
def test_access_check_says_which_is_wrong(s3, options, monkeypatch):
    storage.check_access("s3://runs/ok", options)  # answers, exists, accepts a write
    cases = [
        ("s3://runs/x", StorageOptions(endpoint="http://127.0.0.1:9"), "cannot reach"),
        ("s3://no-such-bucket/x", options, "bucket 'no-such-bucket' does not exist"),
    ]
    for uri, opts, message in cases:
        start = time.time()
        with pytest.raises(StorageError, match=message):
            storage.check_access(uri, opts)
        assert time.time() - start < 15
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    start = time.time()
    with pytest.raises(StorageError, match="credentials were refused") as e:
        storage.check_access("s3://runs/x", options)
    assert time.time() - start < 15
    assert "not-the-secret" not in str(e.value) and ACCESS_KEY not in str(e.value)


def test_s3_filesystem_keeps_its_retries_when_pickled():
    """pyarrow pickles an S3 filesystem without its retry strategy: Ray's workers
    and Train controller then failed on the first refused connection (seen in the outage test).
    Ours is rebuilt from its options wherever it is unpickled."""
    import pyarrow.fs as pafs

    plain = pafs.S3FileSystem(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=9),
                              request_timeout=7)
    state = plain.__reduce__()[1][0]
    assert "retry_strategy" not in state  # pyarrow drops it
    options = StorageOptions(endpoint="http://127.0.0.1:9", max_attempts=9)
    fs = storage.S3Store(options, request_timeout_s=7)
    again = pickle.loads(pickle.dumps(fs))
    assert type(again) is storage.S3Store and again._args == (options, None, 7)


@pytest.mark.integration
def test_listing_does_not_depend_on_the_working_directory(s3_run, tmp_path, monkeypatch):
    """Object-store keys are relative paths; posixpath.relpath resolved them against the
    process's working directory, which a Ray job's driver may have lost (seen under
    `ray job submit`: FileNotFoundError from os.getcwd in the data step)."""
    s3_run.write_bytes("d/x.bin", b"1")
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert s3_run.list_files("d") == {"x.bin": 1}


@pytest.mark.integration
def test_a_short_outage_is_ridden_out_by_the_requests_retries(s3, options):
    """Retried, not resumed: with S3 down, a read with 2 attempts fails in seconds (the path the
    resilience scenario takes with 3: the step waits and runs again), while with the default 10
    a read and a write in flight complete once the server is back, 8 s later: no error reaches
    the step."""
    run = RunFolder(f"s3://runs/outage-{uuid.uuid4().hex[:8]}", options)
    run.write_bytes("a.bin", b"x" * 1000)
    impatient = RunFolder(run.uri, StorageOptions(endpoint=s3.endpoint, max_attempts=2))
    s3.stop()
    back = threading.Thread(target=lambda: (time.sleep(8), s3.start()))
    try:
        start = time.time()
        with pytest.raises(OSError):
            impatient.read_bytes("a.bin")
        assert time.time() - start < 6
        back.start()
        start = time.time()
        assert run.read_bytes("a.bin") == b"x" * 1000
        run.write_bytes("b.bin", b"y" * 10)
        assert time.time() - start >= 3  # it waited for the server
    finally:
        if back.ident is None:  # failed before the restart was scheduled
            s3.start()
        else:
            back.join()
    assert run.read_bytes("b.bin") == b"y" * 10


def test_a_storage_error_line_keeps_the_error_past_a_long_key():
    """The console's "waiting on storage (...)" line names the store's error even where the
    object key is long enough to push it past the line's limit (the failure scenario once
    printed "... in bucket 'runs': AW" and its check for "AWS Error" failed, CI 2026-12-08)."""
    from xdistil_ray.run.storage import first_line

    key = "resilience/teacher/shards/" + "x" * 60 + "/part-810e06962c97d06b-7b41de4d911be0da-36.parquet"
    e = OSError(f"Traceback\nOSError: When uploading part for key '{key}' in bucket 'runs': AWS "
                "Error NETWORK_CONNECTION during UploadPart operation: curlCode: 7, Could not "
                "connect to server; Details: Failed to connect to 127.0.0.1:33533")
    line = first_line(e)
    assert len(line) <= 200
    assert line.startswith("OSError: When uploading part for key 'resilience/teacher/")
    assert " ... AWS Error NETWORK_CONNECTION during UploadPart operation" in line
    short = OSError("OSError: When reading key 'a': AWS Error NETWORK_CONNECTION")
    assert first_line(short) == "OSError: When reading key 'a': AWS Error NETWORK_CONNECTION"
    assert first_line(OSError("no store error here " * 20)) == ("no store error here " * 20)[:200]
    assert first_line(OSError("")) == "OSError"
