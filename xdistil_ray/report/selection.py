"""Choosing the student of a sweep: each candidate's figures (from its eval), the Pareto front
of score against latency and size, and the config's selection rule (``select``).

Pure functions of the candidates' markers: the sweep's ``student/`` step
(:mod:`xdistil_ray.pipelines.sweep`) picks with them, and the report shows them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xdistil_ray.report import tables


@dataclass(frozen=True)
class Figures:
    """What a candidate is compared on."""

    name: str
    shape: str
    """``L<blocks>-H<width>``."""
    params: int
    disk_bytes: int
    latency_ms: float
    """PyTorch on the eval's CPU threads, batch 1."""
    throughput: float
    """PyTorch, sentences per second at the eval's batch size."""
    score: float | None
    """The headline dev score; without dev data the agreement with the teacher (CKA for a
    task-agnostic run)."""
    metric: str
    """What ``score`` is (``accuracy``, ``entity_f1``, ``f1``, ``agreement``, ``cka``)."""
    retained: float | None
    """``score`` over the teacher's; without dev data ``score`` itself."""
    agreement: float | None
    int8_latency_ms: float | None = None
    int8_throughput: float | None = None
    int8_score: float | None = None


def figures(name: str, evaluation, init) -> Figures:
    """Candidate ``name``'s figures from its eval and student-init markers."""
    e, size, cpu = evaluation.eval, evaluation.size, (evaluation.speed or {}).get("cpu", {})
    kept = tables.retained(e)
    if kept is not None:
        metric, score, retained = (kept["metric"], e[f"student_{kept['metric']}"],
                                   kept["share"])
    elif "agreement" in e:
        metric, score = "agreement", e["agreement"]
        retained = score
    else:
        metric, score = "cka", e.get("representation_cka")
        retained = score
    int8 = cpu.get("onnx", {}).get("int8") or {}
    shape = init.student_shape
    return Figures(
        name=name, shape=f"L{shape['num_hidden_layers']}-H{shape['hidden_size']}"
        + (f", V{init.vocab['kept']:,}" if init.vocab else ""),
        params=size["student_params"], disk_bytes=size["student_disk_bytes"],
        latency_ms=cpu["student_latency_ms"], throughput=cpu["student_throughput"],
        score=score, metric=metric, retained=retained, agreement=e.get("agreement"),
        int8_latency_ms=int8.get("latency_ms"), int8_throughput=int8.get("throughput"),
        int8_score=e.get(f"int8_{metric}") if kept is not None else None)


def _value(score: float | None) -> float:
    return -1.0 if score is None else score


def dominates(a: Figures, b: Figures) -> bool:
    """``a`` is at least as good as ``b`` on score, latency and parameters, and better on one."""
    ge = (_value(a.score) >= _value(b.score) and a.latency_ms <= b.latency_ms
          and a.params <= b.params)
    gt = (_value(a.score) > _value(b.score) or a.latency_ms < b.latency_ms
          or a.params < b.params)
    return ge and gt


def pareto_front(rows: list[Figures]) -> list[str]:
    """The names of the candidates no other candidate dominates, in ``rows``' order."""
    return [r.name for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


@dataclass(frozen=True)
class Choice:
    name: str
    met: bool
    """Whether the chosen candidate meets the rule (else it is the closest one)."""
    reason: str


def _what(metric: str) -> str:
    return {"accuracy": "dev accuracy", "entity_f1": "dev entity F1", "f1": "dev F1",
            "exact": "dev EM", "agreement": "agreement with the teacher",
            "cka": "representation CKA"}.get(metric, metric)


def _share(f: Figures) -> str:
    return tables.pct(f.retained)


def choose(rows: list[Figures], select) -> Choice:
    """The candidate ``select`` (:class:`~xdistil_ray.config.SelectConfig`) picks of ``rows``,
    and why; when none meets the rule, the closest, with ``met`` False."""
    if not rows:
        raise ValueError("no candidates to choose from")
    what = _what(rows[0].metric)
    if select.rule == "best":
        budget = select.max_latency_ms
        fits = [r for r in rows if not budget or r.latency_ms <= budget]
        if fits:
            best = max(fits, key=lambda r: (_value(r.score), -r.latency_ms, -r.params))
            within = f" within the {budget:g} ms latency budget" if budget else ""
            return Choice(best.name, True,
                          f"the highest {what} ({tables.pct(best.score)}){within} "
                          f"(select.rule: best)")
        fastest = min(rows, key=lambda r: r.latency_ms)
        return Choice(fastest.name, False,
                      f"no candidate meets the {budget:g} ms latency budget (select.rule: best, "
                      f"select.max_latency_ms); the closest, {fastest.name} "
                      f"({fastest.latency_ms:.2f} ms), is exported")
    need = select.min_retained
    keeps = [r for r in rows if r.retained is not None and r.retained >= need]
    kept = ("of the teacher's " + what) if rows[0].metric not in ("agreement", "cka") else what
    if keeps:
        if select.rule == "smallest":
            pick = min(keeps, key=lambda r: (r.params, -_value(r.score)))
            why = f"the fewest parameters ({pick.params / 1e6:.1f}M)"
        else:
            pick = min(keeps, key=lambda r: (r.latency_ms, -_value(r.score)))
            why = f"the lowest CPU latency at batch 1 ({pick.latency_ms:.2f} ms)"
        return Choice(pick.name, True,
                      f"{why} of the candidates keeping at least {tables.pct(need)} {kept} "
                      f"(it keeps {_share(pick)}; select.rule: {select.rule})")
    closest = max(rows, key=lambda r: _value(r.retained))
    return Choice(closest.name, False,
                  f"no candidate keeps {tables.pct(need)} {kept} (select.rule: "
                  f"{select.rule}, select.min_retained); the closest, {closest.name} "
                  f"({_share(closest)}), is exported")


def section(rows: list[Figures], choice: Choice, select) -> dict:
    """The report's ``candidates`` section."""
    return {"rule": dataclasses.asdict(select), "chosen": choice.name, "met": choice.met,
            "reason": choice.reason, "front": pareto_front(rows),
            "rows": [dataclasses.asdict(r) for r in rows]}


def markdown(section: dict) -> list[str]:
    """The report's table of the candidates, the front and the chosen one marked."""
    rows = section["rows"]
    what = _what(rows[0]["metric"]) if rows else "score"
    lines = ["## Candidates", "",
             f"{len(rows)} students from one teacher pass; ★ the Pareto front ({what} against "
             "CPU latency and parameters: no other candidate is as good on all three and "
             "better on one); ✔ the exported one.", "",
             tables.row(["candidate", "shape", "params", "disk", "CPU ms (b1)", "CPU /s",
                         "int8 ms (b1)", "int8 /s", what, "retained", "agreement", ""]),
             tables.row(["---"] * 11 + [""])]
    for r in rows:
        marks = ("★" if r["name"] in section["front"] else "") + (
            "✔" if r["name"] == section["chosen"] else "")
        lines.append(tables.row([
            r["name"], r["shape"], f"{r['params'] / 1e6:.2f}M", f"{r['disk_bytes'] / 1e6:.1f} MB",
            f"{r['latency_ms']:.2f}", f"{r['throughput']:.0f}",
            "-" if r["int8_latency_ms"] is None else f"{r['int8_latency_ms']:.2f}",
            "-" if r["int8_throughput"] is None else f"{r['int8_throughput']:.0f}",
            tables.pct(r["score"]), tables.pct(r["retained"]), tables.pct(r["agreement"]),
            marks]))
    verdict = "" if section["met"] else " **The rule was not met.**"
    lines += ["", f"Exported as `student/`: **{section['chosen']}**: {section['reason']}."
              + verdict, ""]
    return lines
