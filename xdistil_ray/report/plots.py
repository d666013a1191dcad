"""The report's figures as PNG bytes (matplotlib, no display): each stage's loss curve, and
teacher against student in size and speed."""

from __future__ import annotations

import io
import math

_TEACHER, _STUDENT = "#4c72b0", "#dd8452"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def loss_curves(curves: list[dict]) -> bytes:
    """One panel per stage: the logged loss (the mean over each logging window) against the
    optimizer step, on a log scale when it spans more than a decade; resumes marked.

    Args:
        curves: [{"title", "history": [[step, loss, ...], ...], "resumed_from": [steps]}].
    """
    plt = _pyplot()
    cols = min(3, max(1, len(curves)))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, curve in zip(axes.flat, curves):
        steps = [row[0] for row in curve["history"]]
        losses = [row[1] for row in curve["history"]]
        ax.plot(steps, losses, marker="o", markersize=3, linewidth=1.5, color=_STUDENT)
        positive = [v for v in losses if v > 0]
        if positive and max(positive) / min(positive) > 10:
            from matplotlib.ticker import FormatStrFormatter, LogLocator

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 1-2-5: labels never crowd
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="both", labelsize=8)
        for i, step in enumerate(curve.get("resumed_from", [])):
            ax.axvline(step, color="grey", linestyle="--", linewidth=1,
                       label="resumed" if i == 0 else None)
        if curve.get("resumed_from"):
            ax.legend(fontsize=8)
        ax.set_title(curve["title"], fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle("Training loss per stage", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def speed_size(size: dict, speed: dict) -> bytes:
    """Teacher beside student: parameters, size on disk, latency at batch 1 and throughput at
    the speed batch, per measured device; each panel titled with the student's ratio."""
    plt = _pyplot()
    panels = [("parameters (millions)", size["teacher_params"] / 1e6,
               size["student_params"] / 1e6, size["compression"], "x fewer"),
              ("size on disk (MB)", size["teacher_disk_bytes"] / 1e6,
               size["student_disk_bytes"] / 1e6,
               size["teacher_disk_bytes"] / max(1, size["student_disk_bytes"]), "x smaller")]
    for device in ("cpu", "cuda"):
        if device not in speed:
            continue
        d = speed[device]
        label = "CPU" if device == "cpu" else "GPU"
        panels += [(f"{label} latency, batch 1 (ms)", d["teacher_latency_ms"],
                    d["student_latency_ms"], d["speedup_latency"], "x faster"),
                   (f"{label} throughput, batch {speed['batch_size']} (sentences/s)",
                    d["teacher_throughput"], d["student_throughput"], d["speedup_throughput"],
                    "x faster")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6), squeeze=False)
    for ax, (title, teacher, student, ratio, word) in zip(axes.flat, panels):
        bars = ax.bar(["teacher", "student"], [teacher, student], color=[_TEACHER, _STUDENT])
        for bar, value in zip(bars, (teacher, student)):
            ax.annotate(_short(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
        ax.set_ylim(0, max(teacher, student) * 1.18)
        ax.set_title(f"{title}\nstudent: {ratio:.1f}{word}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Teacher vs student: size and speed (same machine)", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def candidates(section: dict) -> bytes:
    """A sweep's candidates: score against CPU latency at batch 1, each marker's area its
    parameters; the Pareto front joined and ringed, the exported candidate named in bold."""
    plt = _pyplot()
    rows = section["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    biggest = max(r["params"] for r in rows)
    lines = _label_lines(rows)
    for r in rows:
        on_front = r["name"] in section["front"]
        ax.scatter(r["latency_ms"], r["score"] or 0.0, s=60 + 900 * r["params"] / biggest,
                   color=_STUDENT, alpha=0.55, edgecolors="black" if on_front else "none",
                   linewidths=1.5)
        ax.annotate(f"{r['name']} ({r['params'] / 1e6:.1f}M)", (r["latency_ms"], r["score"] or 0.0),
                    textcoords="offset points", xytext=(8, 6 - 11 * lines[r["name"]]), fontsize=8,
                    fontweight="bold" if r["name"] == section["chosen"] else "normal")
    front = sorted((r for r in rows if r["name"] in section["front"]),
                   key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r["score"] or 0.0 for r in front], color="black",
            linewidth=0.8, linestyle="--", label="Pareto front")
    ax.set_xlabel("CPU latency, batch 1 (ms)")
    ax.set_ylabel(rows[0]["metric"].replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Candidates: score against latency (marker area: parameters)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _label_lines(rows: list[dict]) -> dict[str, int]:
    """Each candidate's label line: candidates whose points nearly coincide (within a tenth
    of the latency range and a fiftieth of the score range) get their labels one under the
    other instead of on top of each other."""
    xs = [r["latency_ms"] for r in rows]
    ys = [r["score"] or 0.0 for r in rows]
    dx, dy = 0.1 * ((max(xs) - min(xs)) or 1.0), 0.02 * ((max(ys) - min(ys)) or 1.0)
    out: dict[str, int] = {}
    for i, r in enumerate(rows):
        near = [rows[j]["name"] for j in range(i)
                if abs(xs[j] - xs[i]) <= dx and abs(ys[j] - ys[i]) <= dy]
        out[r["name"]] = max((out[n] + 1 for n in near), default=0)
    return out


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
