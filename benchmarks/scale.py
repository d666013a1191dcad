"""Benchmark: nothing but time and storage grows with the corpus. The data step and teacher
inference (a tiny random teacher) over 100,000 and over 1,000,000 generated sentences, each in
a fresh driver process with its own local Ray.

    .venv/bin/python benchmarks/scale.py [--sizes 100000 1000000] [--format save_to_disk]

``--format save_to_disk`` writes each corpus with `datasets.save_to_disk` (arrow files) and
reads that folder, as a hub or saved corpus is read: streamed from its files by Ray Data.

Prints per size: seconds for each step, time per input sentence, the driver's peak resident
memory, and the stored bytes; the markers' and the shard ledger's sizes, how long a finished
run's checks and a repeated teacher step take (every shard found committed); then the large size
against the small one, with the targets (driver peak memory at most 1.2x, time per sentence at
most 1.2x).

``--kill-largest``: at the largest size the teacher step's driver is killed (with its Ray) once
half the shards are committed and run again, which must skip exactly the shards committed and
run the rest. It runs ``ray stop --force``: run the benchmark alone on the machine.

    .venv/bin/python benchmarks/scale.py --sizes 100000 1000000 10000000 --kill-largest
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time

import _common


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def phase_run(workdir: str, corpus: str, teacher: str, with_teacher: bool = True) -> dict:
    """The data step and (``with_teacher``) the teacher step in one driver with its own Ray."""
    start = time.time()
    _common.start_ray()
    ray_s = time.time() - start
    cfg = _common.config()
    run_dir = os.path.join(workdir, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    data = _common.prepare(run_dir, corpus, teacher, cfg)
    out = {"input_rows": data.corpus.input_rows, "kept": data.corpus.kept,
           "shards": len(data.corpus.shards), "ray_s": ray_s, "data_s": data.seconds,
           "peak_rss_after_data_mb": _common.peak_rss_mb(), "teacher_s": 0.0}
    if with_teacher:
        out["teacher_s"] = _common.teacher_pass(run_dir, data, teacher, cfg).seconds
    return {**out, "total_s": time.time() - start, "peak_rss_mb": _common.peak_rss_mb()}


def phase_teacher(workdir: str, teacher: str) -> dict:
    """The teacher step alone over the committed data (a resumed or repeated run's)."""
    start = time.time()
    _common.start_ray()
    run_dir = os.path.join(workdir, "run")
    marker = _common.teacher_pass(run_dir, _common.data_marker(run_dir), teacher,
                                  _common.config())
    return {"teacher_s": marker.seconds, "total_s": time.time() - start,
            "shards_run": marker.shards_run, "shards_skipped": marker.shards_skipped,
            "rows": marker.rows, "peak_rss_mb": _common.peak_rss_mb()}


def committed_shards(run_dir: str) -> int:
    root = os.path.join(run_dir, "teacher", "shards")
    if not os.path.isdir(root):
        return 0
    return sum(os.path.exists(os.path.join(e.path, "COMPLETE")) for e in os.scandir(root))


def killed_and_resumed(workdir: str, teacher: str, shards: int) -> dict:
    """The teacher step's driver killed (with its Ray) once half the shards are committed,
    then run again: what it skipped and what it ran."""
    script = os.path.abspath(__file__)
    run_dir = os.path.join(workdir, "run")
    start = time.time()
    proc = _common.start_phase(script, "teacher", dict(workdir=workdir, teacher=teacher))
    while committed_shards(run_dir) < shards / 2 and proc.poll() is None:
        time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["ray", "stop", "--force"], capture_output=True)  # what the kill left
    killed_s = time.time() - start
    at_kill = committed_shards(run_dir)
    resumed = _common.run_phase(script, "teacher", dict(workdir=workdir, teacher=teacher))
    return {"killed_after_s": killed_s, "committed_at_kill": at_kill, **resumed}


def rerun_and_sizes(workdir: str, teacher: str) -> dict:
    """A repeated teacher step over a finished run (every shard committed: found and skipped),
    the checks a repeated pipeline makes before skipping (its folders' files against their
    markers), and the sizes of the markers and the shard ledger."""
    from xdistil_ray.run.runfolder import RunFolder

    run_dir = os.path.join(workdir, "run")
    run = RunFolder(run_dir)
    start = time.time()
    problems = run.verify("data") + run.verify("teacher")
    verify_s = time.time() - start
    again = _common.run_phase(os.path.abspath(__file__), "teacher",
                              dict(workdir=workdir, teacher=teacher))
    shard_markers = [os.path.getsize(os.path.join(e.path, "COMPLETE"))
                     for e in os.scandir(os.path.join(run_dir, "teacher", "shards"))]
    return {"verify_s": verify_s, "verify_problems": len(problems), "again": again,
            "data_marker_bytes": os.path.getsize(os.path.join(run_dir, "data", "COMPLETE")),
            "teacher_marker_bytes": os.path.getsize(os.path.join(run_dir, "teacher",
                                                                 "COMPLETE")),
            "shard_markers": len(shard_markers), "shard_marker_bytes": sum(shard_markers),
            "corpus_bytes": folder_bytes(os.path.join(run_dir, "data", "corpus")),
            "teacher_bytes": folder_bytes(os.path.join(run_dir, "teacher"))}


def saved_dataset(text_path: str) -> str:
    """The sentences of ``text_path`` as a `datasets.save_to_disk` folder (column ``text``)."""
    import datasets

    folder = text_path[: -len(".txt")] + "-saved"
    if not os.path.exists(os.path.join(folder, "dataset_info.json")):
        datasets.load_dataset("text", data_files=text_path, split="train").save_to_disk(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--format", choices=["txt", "save_to_disk"], default="txt")
    parser.add_argument("--workdir", default="runs/bench-scale")
    parser.add_argument("--kill-largest", action="store_true",
                        help="at the largest size, kill the teacher step's driver once half the "
                             "shards are committed and run it again (counted)")
    args = parser.parse_args()
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    teacher = _common.random_bert(os.path.join(workdir, "tiny-teacher"), layers=2, hidden=64,
                                  heads=2, intermediate=128)
    results = {}
    for size in args.sizes:
        corpus = _common.write_sentences(os.path.join(workdir, f"corpus-{size}.txt"), size)
        if args.format == "save_to_disk":
            corpus = saved_dataset(corpus)
        at = os.path.join(workdir, str(size))
        kill = args.kill_largest and size == max(args.sizes)
        r = _common.run_phase(os.path.abspath(__file__), "run", dict(
            workdir=at, corpus=corpus, teacher=teacher, with_teacher=not kill))
        if kill:
            r["kill"] = killed_and_resumed(at, teacher, r["shards"])
            r["teacher_s"] = r["kill"]["killed_after_s"] + r["kill"]["teacher_s"]
            r["total_s"] += r["kill"]["killed_after_s"] + r["kill"]["total_s"]
            r["peak_rss_mb"] = max(r["peak_rss_mb"], r["kill"]["peak_rss_mb"])
        r.update(rerun_and_sizes(at, teacher))
        results[size] = r

    print(f"\nmachine: {_common.machine()}")
    print(f"corpus format: {args.format}")
    print(f"tiny teacher (2 x 64, random) with the embedded teacher's tokenizer; logits + CLS "
          f"state stored fp16; default settings ({_common.config().corpus.rows_per_shard} "
          "rows per shard)")
    print(f"{'sentences':>10s}{'kept':>10s}{'shards':>7s}{'Ray s':>7s}{'data s':>8s}"
          f"{'teacher s':>10s}{'total s':>9s}{'us/row':>8s}{'driver peak MiB':>16s}"
          f"{'stored B/row':>13s}")
    for size, r in results.items():
        stored = (r["corpus_bytes"] + r["teacher_bytes"]) / r["kept"]
        print(f"{size:10d}{r['kept']:10d}{r['shards']:7d}{r['ray_s']:7.1f}{r['data_s']:8.1f}"
              f"{r['teacher_s']:10.1f}{r['total_s']:9.1f}{r['total_s'] / size * 1e6:8.0f}"
              f"{r['peak_rss_mb']:16.0f}{stored:13.0f}")
    for size, r in results.items():
        again = r["again"]
        print(f"{size}: data marker {r['data_marker_bytes']:,} B, teacher marker "
              f"{r['teacher_marker_bytes']:,} B, {r['shard_markers']:,} shard markers "
              f"{r['shard_marker_bytes']:,} B; a finished run's checks {r['verify_s']:.1f} s "
              f"({r['verify_problems']} problems), its teacher step again {again['total_s']:.1f} "
              f"s with Ray's start (ran {again['shards_run']}, skipped {again['shards_skipped']})")
        if "kill" in r:
            k = r["kill"]
            print(f"{size}: teacher driver killed after {k['killed_after_s']:.0f} s with "
                  f"{k['committed_at_kill']} of {r['shards']} shards committed; run again: "
                  f"skipped {k['shards_skipped']}, ran {k['shards_run']} "
                  f"({'only the rest' if k['shards_skipped'] == k['committed_at_kill'] and k['shards_run'] == r['shards'] - k['committed_at_kill'] else 'NOT only the rest'}), "
                  f"{k['rows']:,} rows (kept {r['kept']:,})")
    small, large = min(results), max(results)
    if small != large:
        a, b = results[small], results[large]
        memory = b["peak_rss_mb"] / a["peak_rss_mb"]
        per_row = (b["total_s"] / large) / (a["total_s"] / small)
        print(f"{large} vs {small}: driver peak memory {memory:.3f}x (target <= 1.2), time per "
              f"sentence {per_row:.3f}x (target <= 1.2)")


if __name__ == "__main__":
    if not _common.phase_main({"run": phase_run, "teacher": phase_teacher}):
        main()
