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
        "task": cfg.task,
        "teacher": {"model": cfg.teacher.model, "params": init["teacher_params"],
                    "finetuned": finetuned},
        "student": {"params": init["student_params"], "init": cfg.student.init,
                    "num_layers": init["student_shape"]["num_hidden_layers"],
                    "hidden_size": init["student_shape"]["hidden_size"],
                    "num_heads": init["student_shape"]["num_attention_heads"],
                    "intermediate_size": init["student_shape"]["intermediate_size"]},
        "teacher_inference": None if teacher is None else {
            "rows": teacher["rows"], "outputs": teacher["outputs"],
            "shards_run": teacher["shards_run"], "shards_skipped": teacher["shards_skipped"],
            "seconds": teacher["seconds"]},
        "stages": [{"name": s["name"], "losses": s["losses"], "targets": s["targets"],
                    "unfreeze": s["unfreeze"], "steps": s["steps"],
                    "first_loss": s["first_loss"], "final_loss": s["final_loss"],
                    "resumed_from": s.get("resumed_from", []),
                    "seconds": s["seconds"]} for s in stages],
        "eval": evaluation["eval"],
        "speed": evaluation["speed"],
        "size": evaluation["size"],
        "seconds": seconds,
    }


def _fidelity_line(e: dict) -> str:
    if "representation_cka" in e:
        return (f"- representation similarity to the teacher (linear CKA, mean-pooled last layer) "
                f"on {e['heldout_rows']} held-out sentences: {e['representation_cka']:.3f}")
    return (f"- agreement with the teacher on {e['heldout_rows']} held-out transfer sentences: "
            f"{_pct(e['agreement'])}")


def _dev(e: dict, who: str) -> str:
    if f"{who}_f1" in e:
        return f"{_pct(e[f'{who}_f1'])} F1, {_pct(e[f'{who}_word_accuracy'])} word acc."
    return _pct(e.get(f"{who}_accuracy"))


def markdown(report: dict) -> str:
    d, e, sp, sz = report["data"], report["eval"], report["speed"], report["size"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(d["dropped"].items())) or "none"
    ti = report["teacher_inference"]
    lines = [
        f"# xdistil_ray report (task: {report['task']})", "",
        "| model | parameters | dev score | batch latency (CPU) |",
        "|---|---:|---:|---:|",
        f"| teacher ({report['teacher']['model']}) | {sz['teacher_params'] / 1e6:.1f}M | "
        f"{_dev(e, 'teacher')} | {sp['teacher_batch_s'] * 1000:.1f} ms |",
        f"| student (L{report['student']['num_layers']}-H{report['student']['hidden_size']}) | "
        f"{sz['student_params'] / 1e6:.1f}M | {_dev(e, 'student')} | "
        f"{sp['student_batch_s'] * 1000:.1f} ms |", "",
        f"- compression: {sz['compression']:.1f}x fewer parameters; speedup "
        f"{sp['speedup']:.1f}x (batch of {sp['batch_size']}, {sp['torch_threads']} CPU threads)",
        _fidelity_line(e),
        "", "## Data", "",
        f"- input rows {d['input_rows']} = kept {d['kept']} + dropped "
        f"{sum(d['dropped'].values())} ({dropped}); truncated {d['truncated']}",
        f"- {d['shards']} shards; {d['heldout']} sentences held out for fidelity",
        f"- teacher outputs ({', '.join(ti['outputs'])}) for {ti['rows']} sentences in "
        f"{ti['seconds']:.0f}s; shards run {ti['shards_run']}, skipped {ti['shards_skipped']} "
        "(committed by an earlier attempt)"
        if ti else "- no stored teacher outputs (all targets online)",
        "", "## Stages", "",
        "| stage | losses | targets | unfreezing | steps | resumed from step | first loss | "
        "final loss | seconds |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in report["stages"]:
        resumed = ", ".join(str(step) for step in s["resumed_from"]) or "-"
        lines.append(f"| {s['name']} | {' + '.join(s['losses'])} | {s['targets']} | "
                     f"{'gradual' if s['unfreeze'] else 'none'} | {s['steps']} | {resumed} | "
                     f"{s['first_loss']:.4f} | {s['final_loss']:.4f} | {s['seconds']:.0f} |")
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
    fidelity = (f"CKA {e['representation_cka']:.3f}" if "representation_cka" in e
                else f"agreement {_pct(e['agreement'])}")
    return (f"[xdistil] student: {run.uri_of('student')}\n"
            f"[xdistil] report:  {run.uri_of('report.md')}\n"
            f"[xdistil] {fidelity}, dev student {_dev(e, 'student')} / teacher "
            f"{_dev(e, 'teacher')}, "
            f"{sz['compression']:.1f}x smaller, {sp['speedup']:.1f}x faster\n"
            f"[xdistil] run folder: {run.uri}")
