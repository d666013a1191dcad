"""Benchmark: distillation quality, from runs it makes, on the embedded tasks and on a real one.

    .venv/bin/python benchmarks/quality.py [--parts embedded real ood methods ablation]
        [--workdir runs/quality] [--corpus-rows 20000] [--budget 600]

Prints, per run: the teacher's and the student's dev score (accuracy; entity F1 for tags), the
share of the teacher's score the student keeps (retained), agreement with the teacher and
KL(teacher || student) on held-out transfer rows, the transfer set's rows, the stages' steps
and seconds (from their markers: a run read back keeps its figures):

- ``embedded``: the embedded default (jobs/configs/default.yaml) for sentences, pairs and tags;
- ``real``: Debian package sections: each package's one-line description, labeled with the
  section Debian files it under (14 sections), from the Packages index of Debian bookworm
  ``main`` that apt keeps on these machines (read with ``apt-helper cat-file``); the transfer
  corpus is the other packages' descriptions. Nothing here wrote or labeled them;
- ``methods``: the three-stage recipe, OD, HS and MHA (benchmarks/transfer_methods.py's
  variants) at equal optimizer steps on the real task, from the same teacher and data;
- ``ood``: the embedded sentence task with a small out-of-domain transfer corpus (3,636 Debian
  package descriptions instead of reviews), by default (the labeled training rows join the
  transfer set; each stage takes ``train.min_stage_steps``) and as before both (the corpus
  alone, its epochs), and the default with 300-step stages (the minimum's first value);
- ``ablation``: the default recipe with 1/8, 1/4, 1/2 and all of the real transfer corpus
  (``train.min_stage_steps=0``: each stage's steps follow its data, as XtremeDistil's ablation;
  "all" is the ``real`` run's data and teacher at those steps).

Runs are kept under ``--workdir``: run again, a finished run is read back (every step is
complete) and only missing ones run. Runs that share a teacher start from copies of its
committed steps (their fingerprints match).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import _common  # noqa: E402
import transfer_methods  # noqa: E402

from xdistil_ray.config import load_config  # noqa: E402

SECTIONS = ("admin", "database", "editors", "electronics", "games", "graphics", "mail", "math",
            "net", "science", "sound", "text", "video", "web")
"""Debian sections of the real task: topical ones (language-binding sections such as python or
libdevel are named by their descriptions' first words)."""
PER_SECTION = {"train": 160, "dev": 40}
PACKAGES_GLOB = "/var/lib/apt/lists/*debian*_dists_bookworm_main_binary-*_Packages*"
APT_HELPER = "/usr/lib/apt/apt-helper"


def debian_packages() -> list[tuple[str, str]]:
    """(one-line description, section) of every package in the Packages index; a description
    filed under several sections is dropped, repeats kept once."""
    paths = [p for p in sorted(glob.glob(PACKAGES_GLOB)) if not p.endswith(".diff")]
    if not paths or not os.path.exists(APT_HELPER):
        raise SystemExit(f"the real task needs Debian's Packages index ({PACKAGES_GLOB}) and "
                         f"{APT_HELPER}; run `apt-get update` or skip with --parts embedded")
    text = subprocess.run([APT_HELPER, "cat-file", paths[0]], check=True,
                          capture_output=True).stdout.decode("utf-8", "replace")
    sections: dict[str, set[str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.split("\n")
                      if ": " in line and not line.startswith(" "))
        if "Description" in fields and "Section" in fields:
            section = fields["Section"].rsplit("/", 1)[-1]  # contrib/net -> net
            sections.setdefault(fields["Description"].strip(), set()).add(section)
    return sorted((d, next(iter(s))) for d, s in sections.items() if len(s) == 1)


def write_real_task(folder: str, corpus_rows: int, seed: int = 0) -> dict[str, str]:
    """train.jsonl / dev.jsonl (text, label: the section; PER_SECTION rows each) and
    corpus-<fraction>.txt (nested shares of ``corpus_rows`` other descriptions)."""
    paths = {"train": os.path.join(folder, "train.jsonl"),
             "dev": os.path.join(folder, "dev.jsonl")}
    fractions = {"1/8": 8, "1/4": 4, "1/2": 2, "all": 1}
    for name, div in fractions.items():
        paths[name] = os.path.join(folder, f"corpus-{div}.txt")
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    rows = debian_packages()
    rng.shuffle(rows)
    labeled = {"train": [], "dev": []}
    taken = {s: 0 for s in SECTIONS}
    rest = []
    for text, section in rows:
        n = taken.get(section)
        if n is not None and n < PER_SECTION["train"] + PER_SECTION["dev"]:
            labeled["dev" if n < PER_SECTION["dev"] else "train"].append((text, section))
            taken[section] = n + 1
        else:
            rest.append(text)
    for split, items in labeled.items():
        with open(paths[split], "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t, "label": s}) + "\n" for t, s in items)
    corpus = rest[:corpus_rows]
    for name, div in fractions.items():
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in corpus[: len(corpus) // div])
    return paths


def _copy_steps(source: str, folder: str, steps: tuple[str, ...]) -> None:
    for step in steps:
        if os.path.exists(os.path.join(source, step)) and not os.path.exists(
                os.path.join(folder, step)):
            shutil.copytree(os.path.join(source, step), os.path.join(folder, step))


FINISHED_ONLY = False
"""--finished-only: the table of the runs that have a report (their report.json), starting
none."""


def run(folder: str, overrides: list[str], config: str | None = None,
        reuse: tuple[str, tuple[str, ...]] | None = None) -> dict | None:
    """One pipeline run (resumed if its folder has committed steps); its report (None with
    --finished-only for a run without one)."""
    from xdistil_ray.pipelines import distill as pipeline

    if FINISHED_ONLY:  # the report the run wrote, as it is
        path = os.path.join(folder, "report.json")
        if not os.path.exists(path):
            print(f"[quality] {folder}: no report yet, left out (--finished-only)")
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if reuse:
        _copy_steps(reuse[0], folder, reuse[1])
    return pipeline.run(load_config(config, [f"output={folder}", *overrides]))


def score_key(task: str) -> str:
    return "entity_f1" if task == "token" else "accuracy"


def row(part: str, name: str, report: dict | None) -> dict | None:
    if report is None:
        return None
    e, key = report["eval"], score_key(report["task"])
    teacher, student = e[f"teacher_{key}"], e[f"student_{key}"]
    return {"part": part, "run": name, "metric": key, "teacher": teacher, "student": student,
            "retained": student / teacher, "agreement": e["agreement"],
            "kl": e.get("kl_divergence"), "steps": sum(s["steps"] for s in report["stages"]),
            "transfer_rows": report["data"]["kept"],
            "stage_s": sum(s["seconds"] for s in report["stages"])}


def embedded(workdir: str) -> list[dict]:
    return [row("embedded", task, run(os.path.join(workdir, f"embedded-{task}"),
                                      [f"task={task}"], "jobs/configs/default.yaml"))
            for task in ("sentence", "pair", "token")]


OOD_ROWS = 3_636


def ood(workdir: str, paths: dict) -> list[dict]:
    """The embedded sentence task distilled over OOD_ROWS Debian descriptions."""
    base = os.path.join(workdir, "embedded-sentence")
    corpus = os.path.join(workdir, "debian-sections", f"ood-{OOD_ROWS}.txt")
    with open(paths["all"], encoding="utf-8") as f, open(corpus, "w", encoding="utf-8") as out:
        out.writelines(line for _, line in zip(range(OOD_ROWS), f))
    out = []
    for name, folder, extra in (
            ("default", "ood-default", []),
            ("300-step stages", "ood-300", ["train.min_stage_steps=300"]),
            ("corpus alone, its epochs (before)", "ood-before",
             ["corpus.with_labeled=false", "train.min_stage_steps=0"])):
        folder = os.path.join(workdir, folder)
        report = run(folder, [f"corpus.path={corpus}", *extra], "jobs/configs/default.yaml",
                     reuse=(base, ("inputs", "teacher_finetune")))
        out.append(row("ood", f"reviews, {OOD_ROWS} Debian descriptions as corpus: {name}",
                       report))
    return out


def real_overrides(paths: dict, corpus: str = "all") -> list[str]:
    return [f"corpus.path={paths[corpus]}", f"labeled.train={paths['train']}",
            f"labeled.dev={paths['dev']}"]


def real(workdir: str, paths: dict) -> dict:
    return run(os.path.join(workdir, "real"), real_overrides(paths))


def methods(workdir: str, paths: dict, budget: int) -> list[dict]:
    base = os.path.join(workdir, "real")
    data = _common.data_marker(base)
    train_rows = data.corpus.kept - data.corpus.heldout
    labeled_rows = data.split("train").kept
    out = []
    for name, stages in transfer_methods.variants(budget, train_rows, labeled_rows).items():
        report = run(os.path.join(workdir, f"method-{name}"),
                     real_overrides(paths) + ["train.min_stage_steps=0",
                                              "stages=" + json.dumps(stages)],
                     reuse=(base, transfer_methods.SHARED_STEPS))
        out.append(row("methods", name, report))
    return out


def ablation(workdir: str, paths: dict) -> list[dict]:
    """The shares of the corpus, the whole one included, at ``train.min_stage_steps=0``: each
    stage's steps follow its data, as in XtremeDistil's ablation (the default's minimum would
    give the small shares as many steps as the whole corpus)."""
    base = os.path.join(workdir, "real")
    out = []
    for share in ("1/8", "1/4", "1/2", "all"):
        folder = os.path.join(workdir, f"ablation-{share.replace('/', 'of')}")
        steps = transfer_methods.SHARED_STEPS if share == "all" else ("teacher_finetune",)
        report = run(folder, real_overrides(paths, share) + ["train.min_stage_steps=0"],
                     reuse=(base, steps))
        out.append(row("ablation", f"transfer corpus {share}", report))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = ["embedded", "real", "ood", "methods", "ablation"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--workdir", default="runs/quality")
    parser.add_argument("--corpus-rows", type=int, default=20_000,
                        help="real task: package descriptions in the whole transfer corpus")
    parser.add_argument("--finished-only", action="store_true",
                        help="print the table of the runs that have a report; start none")
    parser.add_argument("--budget", type=int, default=600,
                        help="methods: optimizer steps per method, labels stage included")
    args = parser.parse_args()
    global FINISHED_ONLY
    FINISHED_ONLY = args.finished_only
    workdir = os.path.abspath(args.workdir)
    rows = []
    if "embedded" in args.parts:
        rows += embedded(workdir)
    paths = None
    if set(args.parts) & {"real", "ood", "methods", "ablation"}:
        paths = write_real_task(os.path.join(workdir, "debian-sections"), args.corpus_rows)
        real_report = real(workdir, paths)
        rows.append(row("real", "Debian sections, default recipe", real_report))
    if "ood" in args.parts:
        rows += ood(workdir, paths)
    if "methods" in args.parts:
        rows += methods(workdir, paths, args.budget)
    if "ablation" in args.parts:
        rows += ablation(workdir, paths)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; teacher all-MiniLM-L6-v2 "
          "(fine-tuned by each run), student L4-H128 init: teacher")
    if paths:
        counts = {k: sum(1 for _ in open(p, encoding="utf-8")) for k, p in paths.items()}
        print(f"real task: {len(SECTIONS)} Debian sections, {counts['train']} train / "
              f"{counts['dev']} dev descriptions; transfer corpus {counts['all']} other "
              "descriptions (plus the labeled training rows)")
    print("\n| part | run | metric | teacher dev | student dev | retained | agreement | KL | "
          "transfer rows | steps | stages' s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in filter(None, rows):
        kl = "-" if r["kl"] is None else f"{r['kl']:.3f}"
        print(f"| {r['part']} | {r['run']} | {r['metric']} | {r['teacher']:.1%} | "
              f"{r['student']:.1%} | {r['retained']:.1%} | {r['agreement']:.1%} | {kl} | "
              f"{r['transfer_rows']} | {r['steps']} | {r['stage_s']:.0f} |")
    with open(os.path.join(workdir, "quality.json"), "w") as f:
        json.dump([r for r in rows if r], f, indent=1)


if __name__ == "__main__":
    main()
