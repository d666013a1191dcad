"""Step ``report``: ``report.json`` (figures for scripts) and ``report.md`` (for people)."""

from __future__ import annotations

from xdistil_ray.config import Config
from xdistil_ray.runfolder import RunFolder


def build(cfg: Config, *, data: dict, teacher: dict, init: dict, stages: list[dict],
          evaluation: dict, finetuned: bool, seconds: float) -> dict:
    """The report's figures, from the steps' markers."""
    corpus = data["corpus"]
    return {
        "data": {
            "input_rows": corpus["input_rows"], "kept": corpus["kept"],
            "dropped": corpus["dropped"], "truncated": corpus["truncated"],
            "heldout": corpus["heldout"], "shards": len(corpus["shards"]),
            "labeled": {split: {k: v for k, v in info.items() if k != "files"}
                        for split, info in data["labeled"]["splits"].items()},
            "label_names": data["labeled"]["label_names"],
        },
        "teacher": {"model": cfg.teacher.model, "params": init["teacher_params"],
                    "finetuned": finetuned},
        "student": {"params": init["student_params"], "init": cfg.student.init,
                    "num_layers": cfg.student.num_layers, "hidden_size": cfg.student.hidden_size,
                    "num_heads": cfg.student.num_heads,
                    "intermediate_size": cfg.student.intermediate_size},
        "teacher_inference": {"rows": teacher["rows"], "outputs": teacher["outputs"],
                              "shards_run": teacher["shards_run"],
                              "shards_skipped": teacher["shards_skipped"],
                              "seconds": teacher["seconds"]},
        "stages": [{"name": s["name"], "loss": s["loss"], "steps": s["steps"],
                    "first_loss": s["first_loss"], "final_loss": s["final_loss"],
                    "seconds": s["seconds"]} for s in stages],
        "eval": evaluation["eval"],
        "speed": evaluation["speed"],
        "size": evaluation["size"],
        "seconds": seconds,
    }


def markdown(report: dict) -> str:
    d, e, sp, sz = report["data"], report["eval"], report["speed"], report["size"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(d["dropped"].items())) or "none"
    lines = [
        "# xdistil_ray report", "",
        "| model | parameters | dev accuracy | batch latency (CPU) |",
        "|---|---:|---:|---:|",
        f"| teacher ({report['teacher']['model']}) | {sz['teacher_params'] / 1e6:.1f}M | "
        f"{_pct(e.get('teacher_accuracy'))} | {sp['teacher_batch_s'] * 1000:.1f} ms |",
        f"| student (L{report['student']['num_layers']}-H{report['student']['hidden_size']}) | "
        f"{sz['student_params'] / 1e6:.1f}M | {_pct(e.get('student_accuracy'))} | "
        f"{sp['student_batch_s'] * 1000:.1f} ms |", "",
        f"- compression: {sz['compression']:.1f}x fewer parameters; speedup "
        f"{sp['speedup']:.1f}x (batch of {sp['batch_size']}, {sp['torch_threads']} CPU threads)",
        f"- agreement with the teacher on {e['heldout_rows']} held-out transfer sentences: "
        f"{_pct(e['agreement'])}",
        "", "## Data", "",
        f"- input rows {d['input_rows']} = kept {d['kept']} + dropped "
        f"{sum(d['dropped'].values())} ({dropped}); truncated {d['truncated']}",
        f"- {d['shards']} shards; {d['heldout']} sentences held out for fidelity",
        f"- teacher outputs ({', '.join(report['teacher_inference']['outputs'])}) for "
        f"{report['teacher_inference']['rows']} sentences in "
        f"{report['teacher_inference']['seconds']:.0f}s",
        "", "## Stages", "",
        "| stage | loss | steps | first loss | final loss | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in report["stages"]:
        lines.append(f"| {s['name']} | {s['loss']} | {s['steps']} | {s['first_loss']:.4f} | "
                     f"{s['final_loss']:.4f} | {s['seconds']:.0f} |")
    lines += ["", f"Total wall time of this invocation: {report['seconds']:.0f}s", ""]
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def write(run: RunFolder, cfg: Config, **kwargs) -> dict:
    report = build(cfg, **kwargs)
    run.write_json("report.json", report)
    run.write_text("report.md", markdown(report))
    return report


def summary(run: RunFolder, report: dict) -> str:
    e, sp, sz = report["eval"], report["speed"], report["size"]
    return (f"[xdistil] student: {run.path('student')}\n"
            f"[xdistil] report:  {run.path('report.md')}\n"
            f"[xdistil] agreement {_pct(e['agreement'])}, dev accuracy student "
            f"{_pct(e.get('student_accuracy'))} / teacher {_pct(e.get('teacher_accuracy'))}, "
            f"{sz['compression']:.1f}x smaller, {sp['speedup']:.1f}x faster\n"
            f"[xdistil] run folder: {run.uri}")
