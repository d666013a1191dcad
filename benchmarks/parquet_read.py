"""Benchmark: one pass over a few committed parquet files, Ray Data's V2 datasource (2.60's
default) against the V1 datasource the project's Ray runs with (``ray_start.RAY_ENV``).

    .venv/bin/python benchmarks/parquet_read.py [--files 3] [--rows 256] [--passes 4]

Each reader runs in its own fresh process with its own local Ray (2 CPUs), as a run's steps do:
the same files, ``--passes`` passes of ``read_parquet(files).select_columns(...)`` iterated to
the end. Prints each pass's seconds, and the V1/V2 ratio of the first pass (cold workers) and of
the mean of the others (warm workers). V2 also counts its footer-reading actors. Last, the same
columns read by pyarrow in this process, file by file (how the data step counts rows, rejects
and flags of committed files), against V2's warm passes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import _common


def read_passes(files: list[str], passes: int, v2: bool) -> dict:
    os.environ["RAY_DATA_USE_DATASOURCE_V2"] = "1" if v2 else "0"
    os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = "2"
    import ray
    import ray.data
    from ray.util.state import list_actors

    ray.init(num_cpus=2, include_dashboard=True, _node_ip_address="127.0.0.1",
             dashboard_host="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.DataContext.get_current().use_datasource_v2 = v2
    seconds, rows = [], 0
    for _ in range(passes):
        start = time.perf_counter()
        ds = ray.data.read_parquet(files).select_columns(["ids", "heldout"])
        rows = sum(len(b["ids"]) for b in ds.iter_batches(batch_size=None))
        seconds.append(time.perf_counter() - start)
    footer = len(list_actors(filters=[("class_name", "=", "FooterReader")], limit=10_000,
                             raise_on_missing_output=False))
    ray.shutdown()
    return {"seconds": seconds, "rows": rows, "footer_actors": footer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tempfile.mkdtemp(prefix="parquet-read-")
    files = []
    for k in range(args.files):
        path = os.path.join(folder, f"shard-{k}.parquet")
        pq.write_table(pa.table({"ids": [list(range(32))] * args.rows,
                                 "heldout": [False] * args.rows}), path)
        files.append(path)
    print(_common.machine())
    results = {}
    for name, v2 in (("v2", True), ("v1", False)):
        r = _common.run_phase(__file__, "read", {"files": files, "passes": args.passes, "v2": v2})
        assert r["rows"] == args.files * args.rows, r
        results[name] = r
        print(f"{name}: passes {', '.join(f'{s:.2f}' for s in r['seconds'])} s; "
              f"footer actors {r['footer_actors']}")
    first = results["v1"]["seconds"][0] / results["v2"]["seconds"][0]
    warm = (statistics.mean(results["v1"]["seconds"][1:])
            / statistics.mean(results["v2"]["seconds"][1:]))
    print(f"v1/v2 time: first pass {first:.2f}, later passes {warm:.2f}")
    seconds = []
    for _ in range(args.passes):
        start = time.perf_counter()
        rows = sum(pq.ParquetFile(f).read(columns=["heldout"]).num_rows for f in files)
        seconds.append(time.perf_counter() - start)
    assert rows == args.files * args.rows
    print(f"pyarrow in the driver: passes {', '.join(f'{s:.4f}' for s in seconds)} s; against "
          f"v2's later passes {statistics.mean(seconds) / statistics.mean(results['v2']['seconds'][1:]):.4f}")


if __name__ == "__main__":
    if not _common.phase_main({"read": read_passes}):
        main()
