"""Transfer methods compared at equal training budget on the embedded default.

The paper's three-stage recipe (the baseline), output-distribution transfer alone (OD),
hidden-state transfer with a uniform layer mapping (HS) and MiniLMv2 attention-relation transfer
(MHA) distill the embedded default's student (L4-H128, initialized from the teacher) from the
same fine-tuned teacher, data and stored teacher outputs, for the same number of optimizer
steps of the same batch size. HS and MHA are task-agnostic methods: their budget ends with the
same labels stage as the three-stage recipe, so that the task head is fitted and dev accuracy
can be compared. Prints student dev accuracy and agreement with the teacher, with ratios to the
three-stage baseline.

    python benchmarks/transfer_methods.py [--root runs/bench-methods] [--budget 372]
        [--init teacher|random] [--reuse runs/bench-methods/three-stage]

The first variant runs the whole pipeline (or, with --reuse, starts from another run's data,
teacher fine-tuning and teacher outputs); the others start from copies of its committed data,
teacher and student_init steps (their fingerprints match: only the stages differ).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from xdistil_ray.config import load_config  # noqa: E402

SHARED_STEPS = ("inputs", "data", "teacher_finetune", "teacher", "student_init")
TEACHER_STEPS = SHARED_STEPS[:-1]  # what does not depend on the student
TRAIN_ROWS = 21_660  # the embedded transfer set's training rows (22,800 kept, 1,140 held out)
LABELED_ROWS = 2_000
BATCH = 64


def _epochs(steps: int, rows: int, batch: int = BATCH) -> float:
    return round(steps * batch / rows, 4)


def variants(budget: int, train_rows: int = TRAIN_ROWS,
             labeled_rows: int = LABELED_ROWS) -> dict[str, list[dict]]:
    """Stages of each method; every variant takes ``budget`` optimizer steps in all, over
    ``train_rows`` transfer rows and ``labeled_rows`` labeled ones (with
    ``train.min_stage_steps=0``: the epochs alone decide)."""
    label_steps = math.ceil(labeled_rows / 32)
    label_stage = {"name": "labels", "losses": [{"type": "labels"}], "batch_size": 32,
                   "epochs": 1, "learning_rate": 1.0e-4}
    transfer = budget - label_steps
    half = transfer // 2
    online = {"targets": "online", "learning_rate": 1.0e-3,
              "epochs": _epochs(transfer, train_rows)}
    return {
        "three-stage": [
            {"name": "representation", "losses": [{"type": "representation"}],
             "epochs": _epochs(half, train_rows), "learning_rate": 1.0e-3},
            {"name": "logits", "losses": [{"type": "logits"}], "unfreeze": "gradual",
             "epochs": _epochs(transfer - half, train_rows), "learning_rate": 1.0e-3},
            {**label_stage, "unfreeze": "gradual"}],
        "OD": [{"name": "logits", "losses": [{"type": "logits", "function": "kl",
                                              "temperature": 2.0}],
                "epochs": _epochs(budget, train_rows), "learning_rate": 1.0e-3}],
        "HS": [{"name": "hidden-states", **online,
                "losses": [{"type": "hidden_states", "layer_map": "uniform"}]}, label_stage],
        "MHA": [{"name": "attention", **online,
                 "losses": [{"type": "attention_relations", "relation_heads": 8}]}, label_stage],
    }


def _copy_steps(source: str, folder: str, steps: tuple[str, ...]) -> None:
    for step in steps:
        if os.path.exists(os.path.join(source, step)):
            shutil.copytree(os.path.join(source, step), os.path.join(folder, step))


def run_variant(root: str, name: str, stages: list[dict], first: str | None, *, init: str,
                reuse: str | None) -> dict:
    from xdistil_ray.pipelines import distill as pipeline

    folder = os.path.join(root, name)
    if not os.path.exists(os.path.join(folder, "data")):
        if first is not None:
            _copy_steps(first, folder, SHARED_STEPS)
        elif reuse:
            _copy_steps(reuse, folder, TEACHER_STEPS)
    cfg = load_config(None, [f"output={folder}", f"student.init={init}",
                             "train.min_stage_steps=0", "stages=" + json.dumps(stages)])
    start = time.time()
    report = pipeline.run(cfg)
    report["wall_s"] = time.time() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="runs/bench-methods")
    parser.add_argument("--budget", type=int, default=372,
                        help="optimizer steps per variant, labels stage included")
    parser.add_argument("--init", default="teacher", choices=("teacher", "random"),
                        help="student initialization (random makes the methods' part larger)")
    parser.add_argument("--reuse", default=None,
                        help="a finished run of this benchmark to take data and teacher from")
    args = parser.parse_args()
    reports, first = {}, None
    for name, stages in variants(args.budget).items():
        reports[name] = run_variant(args.root, name, stages, first, init=args.init,
                                    reuse=args.reuse)
        first = first or os.path.join(args.root, name)
    base = reports["three-stage"]["eval"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; budget {args.budget} "
          f"steps per variant; student L4-H128 ({args.init} init) from all-MiniLM-L6-v2 "
          "(fine-tuned)")
    print(f"teacher dev accuracy {base['teacher_accuracy']:.3f}\n")
    print("| method | steps | training s | dev accuracy | ratio | agreement | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in reports.items():
        e = r["eval"]
        steps = sum(s["steps"] for s in r["stages"])
        seconds = sum(s["seconds"] for s in r["stages"])
        print(f"| {name} | {steps} | {seconds:.0f} | {e['student_accuracy']:.3f} | "
              f"{e['student_accuracy'] / base['student_accuracy']:.3f} | {e['agreement']:.3f} | "
              f"{e['agreement'] / base['agreement']:.3f} |")


if __name__ == "__main__":
    main()
