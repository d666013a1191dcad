"""Benchmark: nothing but time and storage grows with the corpus. The data step and teacher
inference (a tiny random teacher) over 100,000 and over 1,000,000 generated sentences, each in
a fresh driver process with its own local Ray.

    .venv/bin/python benchmarks/scale.py [--sizes 100000 1000000] [--format save_to_disk]

``--format save_to_disk`` writes each corpus with `datasets.save_to_disk` (arrow files) and
reads that folder, as a hub or saved corpus is read: streamed from its files by Ray Data.

Prints per size: seconds for each step, time per input sentence, the driver's peak resident
memory, and the stored bytes; then the large size against the small one, with the targets
(driver peak memory at most 1.2x, time per sentence at most 1.2x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import _common


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def phase_run(workdir: str, corpus: str, teacher: str) -> dict:
    start = time.time()
    _common.start_ray()
    ray_s = time.time() - start
    cfg = _common.config()
    run_dir = os.path.join(workdir, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    data = _common.prepare(run_dir, corpus, teacher, cfg)
    data_rss = _common.peak_rss_mb()
    teacher_marker = _common.teacher_pass(run_dir, data, teacher, cfg)
    return {"input_rows": data.corpus.input_rows, "kept": data.corpus.kept,
            "shards": len(data.corpus.shards), "ray_s": ray_s, "data_s": data.seconds,
            "teacher_s": teacher_marker.seconds, "total_s": time.time() - start,
            "peak_rss_mb": _common.peak_rss_mb(), "peak_rss_after_data_mb": data_rss,
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
        results[size] = _common.run_phase(os.path.abspath(__file__), "run", dict(
            workdir=os.path.join(workdir, str(size)), corpus=corpus, teacher=teacher))

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
    small, large = min(results), max(results)
    if small != large:
        a, b = results[small], results[large]
        memory = b["peak_rss_mb"] / a["peak_rss_mb"]
        per_row = (b["total_s"] / large) / (a["total_s"] / small)
        print(f"{large} vs {small}: driver peak memory {memory:.3f}x (target <= 1.2), time per "
              f"sentence {per_row:.3f}x (target <= 1.2)")


if __name__ == "__main__":
    if not _common.phase_main({"run": phase_run}):
        main()
