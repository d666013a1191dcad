"""Benchmark: how long one storage request rides out an object store that is down, with the
project's retry settings (``storage.max_attempts``, 10) against the SDKs' defaults (3), before
a step has to wait on storage and resume (``pipeline._run_through_outages``).

    .venv/bin/python benchmarks/storage_outage.py [--repeats 2]

Starts the real S3 server (SeaweedFS, tests/s3server.py) on loopback, writes an object, kills
the server, then times each request until it gives up: a pyarrow read (HeadObject) and write
(CreateMultipartUpload) through ``storage.S3Store``, as every step's reads and writes, and the
lease's conditional put through boto3 (``storage.put_if_absent``). A down server refuses the
connection at once, so the time is the retry strategy's backoff alone. Prints the median
seconds per request and setting, and the project's ratio to the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import _common

sys.path.insert(0, os.path.join(_common.ROOT, "tests"))


def _time(fn) -> float:
    start = time.time()
    try:
        fn()
    except Exception:  # noqa: BLE001 - giving up is what is timed
        return time.time() - start
    raise RuntimeError("the request succeeded against a stopped server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from s3server import SeaweedS3

    from xdistil_ray.run.storage import S3Store, StorageOptions, put_if_absent

    print(_common.machine())
    s3 = SeaweedS3(tempfile.mkdtemp(prefix="outage-"))
    s3.start()
    try:
        s3.make_bucket("bench")
        os.environ.update(s3.credentials_env())
        project = StorageOptions(endpoint=s3.endpoint)
        with S3Store(project).open_output_stream("bench/x") as f:
            f.write(b"1")
        s3.stop()
        settings = {"defaults (3 attempts)": StorageOptions(endpoint=s3.endpoint, max_attempts=3),
                    f"project ({project.max_attempts} attempts)": project}
        results: dict[str, dict[str, float]] = {}
        for name, options in settings.items():
            fs = S3Store(options)
            requests = {
                "pyarrow read": lambda: fs.open_input_file("bench/x").read(),
                "pyarrow write": lambda: fs.open_output_stream("bench/y").write(b"1"),
                "boto3 conditional put (lease)":
                    lambda: put_if_absent("s3://bench/z", b"1", options),
            }
            results[name] = {req: statistics.median(_time(fn) for _ in range(args.repeats))
                             for req, fn in requests.items()}
    finally:
        s3.stop()
    base, mine = results.values()
    print(f"{'request':32} " + " ".join(f"{n:>24}" for n in results) + f" {'ratio':>7}")
    for req in base:
        print(f"{req:32} " + " ".join(f"{r[req]:>23.1f}s" for r in results.values())
              + f" {mine[req] / base[req]:>6.1f}x")


if __name__ == "__main__":
    main()
