"""Benchmark: which student shapes keep a QA teacher's answering, on the embedded QA data.

    .venv/bin/python benchmarks/qa_student_shapes.py --teacher runs/qa-default/teacher_finetune/model
    .venv/bin/python benchmarks/qa_student_shapes.py --teacher ... --shapes 4x384x12x1536 \\
        4x128x4x512 --epochs 2 --lr 1e-4

Each student is built from the teacher as the pipeline's `init: teacher` does
(`models.build_student`: a subset of its blocks, its width factorized when narrower) and
fine-tuned on gold spans (cross-entropy of start and end, AdamW, warm-up and linear decay,
batch 32, one process, 2 threads) over generated SQuAD 2.0-style questions of the embedded
shape (2,000 train, 500 dev, a third unanswerable); after each epoch it prints the student's dev
EM / F1 / HasAns F1 (SQuAD scoring, best no-answer threshold) and its F1 as a ratio of the
teacher's on the same dev questions (the baseline, measured first in the same run). The
teacher: the run's fine-tuned QA teacher (`<run>/teacher_finetune/model`), or any
`...ForQuestionAnswering` folder with the embedded teacher's vocabulary.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH = 32


def _encode(tok, rows, settings):
    from xdistil_ray.tasks import qa

    return qa.encode_windows(tok, [r["question"] for r in rows], [r["context"] for r in rows],
                             [r["answers"] for r in rows], settings)


def _batch(windows: dict, idx, pad_id: int) -> dict:
    """The windows ``idx`` padded as the pipeline pads them (``batches.pad_batch``)."""
    from xdistil_ray.modeling.batches import pad_batch

    columns = [c for c in ("input_ids", "token_type_ids", "start_position", "end_position")
               if c in windows]
    return pad_batch({c: [windows[c][i] for i in idx] for c in columns}, pad_id, None)


def _scores(model, windows, rows, settings) -> dict:
    import torch

    from xdistil_ray.tasks import qa
    from xdistil_ray.modeling.scoring import qa_answers

    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(windows["input_ids"]), 64):
            b = _batch(windows, range(s, min(s + 64, len(windows["input_ids"]))),
                       model.config.pad_token_id or 0)
            b.pop("labels", None)
            out = model(**b)
            logits = torch.stack([out.start_logits, out.end_logits], -1)
            preds += [logits[i, :int(m.sum())].numpy() for i, m in enumerate(b["attention_mask"])]
    model.train()
    answers = qa_answers(preds, {"example": windows["row"],
                                 "offset_start": windows["offset_start"],
                                 "offset_end": windows["offset_end"],
                                 "context": [rows[r]["context"] for r in windows["row"]]},
                         settings)
    return qa.squad_scores(answers, {i: r["answers"]["text"] for i, r in enumerate(rows)})


def _train(model, train, dev, dev_rows, settings, *, epochs: int, lr: float, label: str,
           baseline_f1: float) -> None:
    import numpy as np
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    n = len(train["input_ids"])
    total = epochs * (n // BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.1 * total)) * max(0.0, 1 - s / total))
    start, steps = time.time(), 0
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(n)
        losses = []
        for s in range(0, n - BATCH + 1, BATCH):
            b = _batch(train, order[s:s + BATCH], model.config.pad_token_id or 0)
            labels = b.pop("labels")
            out = model(**b, start_positions=labels[:, 0], end_positions=labels[:, 1])
            out.loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(out.loss.item())
            steps += 1
        r = _scores(model, dev, dev_rows, settings)
        print(f"{label:>14} epoch {epoch + 1} ({steps} steps, {time.time() - start:.0f}s): "
              f"loss {np.mean(losses):.3f}  dev EM {r['exact']:.1%}  F1 {r['f1']:.1%}  "
              f"HasAns F1 {r['has_ans_f1']:.1%}  F1 / teacher's {r['f1'] / baseline_f1:.2f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="a fine-tuned QA teacher folder")
    parser.add_argument("--shapes", nargs="+",
                        default=["4x384x12x1536", "3x384x12x1536", "4x128x4x512"],
                        help="student shapes, layers x hidden x heads x feed-forward")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForQuestionAnswering

    from xdistil_ray.modeling import models
    from xdistil_ray.tasks import qa
    from xdistil_ray.data.embedded_tasks import qa_example

    torch.set_num_threads(2)
    tok = models.load_tokenizer(args.teacher)
    rng = random.Random(args.seed)
    rows = [qa_example(rng, rng.random() < 2 / 3) for _ in range(2500)]
    train_rows, dev_rows = rows[:2000], rows[2000:]
    settings = qa.WindowSettings()
    train, dev = _encode(tok, train_rows, settings), _encode(tok, dev_rows, settings)
    teacher = AutoModelForQuestionAnswering.from_pretrained(args.teacher)
    base = _scores(teacher, dev, dev_rows, settings)
    print(f"{'teacher':>14}: dev EM {base['exact']:.1%}  F1 {base['f1']:.1%}  "
          f"HasAns F1 {base['has_ans_f1']:.1%}  ({models.num_params(teacher) / 1e6:.1f}M)",
          flush=True)
    for shape in args.shapes:
        layers, hidden, heads, ffn = (int(v) for v in shape.split("x"))
        student = models.build_student(teacher, num_layers=layers, hidden_size=hidden,
                                       num_heads=heads, intermediate_size=ffn, init="teacher",
                                       seed=args.seed, task="qa")
        label = f"L{layers}-H{hidden}"
        r = _scores(student, dev, dev_rows, settings)
        print(f"{label:>14} as built ({models.num_params(student) / 1e6:.1f}M): dev F1 "
              f"{r['f1']:.1%}  HasAns F1 {r['has_ans_f1']:.1%}", flush=True)
        _train(student, train, dev, dev_rows, settings, epochs=args.epochs, lr=args.lr,
               label=label, baseline_f1=max(base["f1"], 1e-9))


if __name__ == "__main__":
    main()
