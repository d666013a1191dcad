"""Benchmark: bytes per sentence the teacher inference step stores, against the raw fp16
payload of the outputs it holds.

    .venv/bin/python benchmarks/storage.py [--sentences 4000]

Runs the real step (local Ray) over the same prepared sentences for the cases that decide the
size: the embedded default (2 logits + the 384-wide CLS state), a token task (9 tags + the
384-wide state, for every real token), and a 1,000-label head stored whole and as top-20. For
each: the output columns' bytes on disk per sentence against their raw fp16 payload (real
tokens only, no padding), the whole part files' bytes per sentence (ids and token ids
included), and, for the token task, what padding to the maximum length would have cost.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil

import _common

OUTPUT_COLUMNS = ("logits", "hidden", "logits_topk", "logits_index", "logits_rest")


def teacher(folder: str, num_labels: int, task: str) -> str:
    """The embedded teacher (all-MiniLM-L6-v2) with an untrained head of ``num_labels``."""
    import torch

    from xdistil_ray.modeling.models import auto_class, load_tokenizer, resolve_teacher_path

    if not os.path.exists(os.path.join(folder, "config.json")):
        path = resolve_teacher_path("embedded")
        torch.manual_seed(0)
        auto_class(task).from_pretrained(path, num_labels=num_labels).save_pretrained(folder)
        load_tokenizer(path).save_pretrained(folder)
    return folder


def measure(run_dir: str) -> dict:
    """Bytes on disk of the step's parts, in total and per column (parquet column chunks)."""
    import pyarrow.parquet as pq

    total, columns, rows, tokens = 0, {}, 0, 0
    for path in glob.glob(os.path.join(run_dir, "teacher", "shards", "*", "part-*.parquet")):
        total += os.path.getsize(path)
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                name = chunk.path_in_schema.split(".")[0]
                columns[name] = columns.get(name, 0) + chunk.total_compressed_size
        tokens += sum(len(r) for r in pq.read_table(path, columns=["input_ids"])
                      .column("input_ids").to_pylist())
    return {"file_bytes": total, "columns": columns, "rows": rows, "tokens": tokens}


def phase_run(workdir: str, sentences: int) -> list[dict]:
    _common.start_ray()
    corpus = _common.write_sentences(os.path.join(workdir, "corpus.txt"), sentences)
    base = _common.config()
    cases = [
        ("sentence, 2 labels + CLS state", teacher(os.path.join(workdir, "t2"), 2, "sentence"),
         "sentence", 0, 2, ("logits", "hidden")),
        ("token, 9 tags + states", teacher(os.path.join(workdir, "t9"), 9, "token"),
         "token", 0, 9, ("logits", "hidden")),
        ("sentence, 1000 labels", teacher(os.path.join(workdir, "t1000"), 1000, "sentence"),
         "sentence", 0, 1000, ("logits",)),
        ("sentence, 1000 labels, top-20", os.path.join(workdir, "t1000"),
         "sentence", 20, 1000, ("logits",)),
    ]
    data_dir = os.path.join(workdir, "data-run")
    shutil.rmtree(data_dir, ignore_errors=True)
    data = _common.prepare(data_dir, corpus, cases[0][1], base)
    results = []
    for name, model, task, top_k, labels, outputs in cases:
        cfg = _common.config(**{"teacher.inference.top_k": top_k})
        run_dir = os.path.join(workdir, "run-" + str(len(results)))
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(os.path.join(data_dir, "data"), os.path.join(run_dir, "data"))
        _common.teacher_pass(run_dir, data, model, cfg, outputs=outputs, task=task)
        found = measure(run_dir)
        per = found["tokens"] if task == "token" else found["rows"]
        width = (labels if "logits" in outputs else 0) + (384 if "hidden" in outputs else 0)
        raw = per * width * 2
        if top_k:  # k fp16 values, k int32 indices, one fp16 log-sum-exp
            raw = found["rows"] * (top_k * 2 + top_k * 4 + 2)
        results.append({**found, "name": name, "raw": raw,
                        "padded": found["rows"] * base.corpus.max_length * width * 2
                        if task == "token" else None, "top_k": top_k,
                        "dense_raw": found["rows"] * labels * 2 if top_k else None})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--workdir", default="runs/bench-storage")
    args = parser.parse_args()
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    results = _common.run_phase(os.path.abspath(__file__), "run",
                                dict(workdir=workdir, sentences=args.sentences))
    print(f"\nmachine: {_common.machine()}")
    rows = results[0]["rows"]
    print(f"{rows} sentences, {results[0]['tokens'] / rows:.1f} real tokens each; bytes per "
          "sentence (parquet on disk)")
    print(f"{'case':34s}{'raw fp16':>10s}{'outputs':>10s}{'ratio':>7s}{'parts':>8s}{'ratio':>7s}"
          "  note")
    for r in results:
        outputs = sum(v for k, v in r["columns"].items() if k in OUTPUT_COLUMNS)
        note = ""
        if r["padded"]:
            note = f"padded to max_length: {r['padded'] / r['rows']:.0f} B"
        if r["dense_raw"]:
            note = (f"vs all 1000 logits raw {r['dense_raw'] / r['rows']:.0f} B: "
                    f"{outputs / r['dense_raw']:.3f}x")
        print(f"{r['name']:34s}{r['raw'] / r['rows']:10.0f}{outputs / r['rows']:10.0f}"
              f"{outputs / r['raw']:7.3f}{r['file_bytes'] / r['rows']:8.0f}"
              f"{r['file_bytes'] / r['raw']:7.3f}  {note}")
    print("outputs = the output columns' compressed bytes; parts = whole files (with id, "
          "input_ids, heldout)")


if __name__ == "__main__":
    if not _common.phase_main({"run": phase_run}):
        main()
