"""The report's tables and scores as Markdown, from report.json's figures: teacher beside
student, size and speed, the share of the teacher's score the student retains. Shared by the
report (report/step.py) and the model card (model_card.py)."""

from __future__ import annotations


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def dev_columns(e: dict | None, prefix: str = "teacher_") -> list[tuple[str, str]]:
    """(header, eval key suffix) of the task's dev scores in ``e`` (keys ``<prefix><score>``);
    none without dev data."""
    if e and f"{prefix}entity_f1" in e:
        return [("dev entity F1", "entity_f1"), ("dev word acc.", "word_accuracy")]
    if e and f"{prefix}exact" in e:  # extractive QA (SQuAD)
        split = [("dev HasAns F1", "has_ans_f1"), ("dev NoAns F1", "no_ans_f1")]
        return [("dev EM", "exact"), ("dev F1", "f1")] + (
            split if f"{prefix}has_ans_f1" in e else [])
    if e and f"{prefix}accuracy" in e:
        return [("dev accuracy", "accuracy"), ("dev macro-F1", "macro_f1")]
    return []


def retained(e: dict) -> dict | None:
    """The share of the teacher's headline dev score the student keeps (accuracy; entity F1;
    SQuAD F1): {"metric", "share"}; None without dev scores."""
    dev = dev_columns(e)
    if not dev:
        return None
    key = "f1" if any(k == "f1" for _, k in dev) else dev[0][1]
    teacher, student = e.get(f"teacher_{key}"), e.get(f"student_{key}")
    if teacher is None or student is None:
        return None
    return {"metric": key, "share": student / teacher if teacher else None}


def results_table(report: dict) -> list[str]:
    """Teacher beside student: shape, parameters, size, speedups, task scores, fidelity."""
    e, sz, cpu = report["eval"], report["size"], report["speed"]["cpu"]
    t, s = report["teacher"], report["student"]
    dev = dev_columns(report["eval"])
    fidelity = "agreement" if "agreement" in e else "representation_cka"
    fidelity_header = "agreement with teacher" if fidelity == "agreement" else "CKA with teacher"
    batch = report["speed"]["batch_size"]
    kept = retained(e)
    kept_header = [f"retained ({dict((k, h) for h, k in dev)[kept['metric']]})"] if kept else []
    header = (["model", "layers x hidden", "parameters", "size on disk",
               "CPU speedup (batch 1)", f"CPU speedup (batch {batch})"]
              + [h for h, _ in dev] + kept_header + [fidelity_header])
    rows = [
        [f"teacher ({t['model']})", f"{t['num_layers']} x {t['hidden_size']}",
         f"{sz['teacher_params'] / 1e6:.1f}M", f"{sz['teacher_disk_bytes'] / 1e6:.1f} MB",
         "1.0x", "1.0x"] + [pct(e.get(f"teacher_{k}")) for _, k in dev]
        + ["-"] * len(kept_header) + ["-"],
        [f"student (init: {s['init']})", f"{s['num_layers']} x {s['hidden_size']}",
         f"{sz['student_params'] / 1e6:.1f}M ({sz['compression']:.1f}x fewer)",
         f"{sz['student_disk_bytes'] / 1e6:.1f} MB",
         f"{cpu['speedup_latency']:.1f}x", f"{cpu['speedup_throughput']:.1f}x"]
        + [pct(e.get(f"student_{k}")) for _, k in dev]
        + [pct(kept["share"]) for _ in kept_header]
        + [pct(e[fidelity]) if fidelity == "agreement" else f"{e[fidelity]:.3f}"],
    ]
    int8 = cpu.get("onnx", {}).get("int8")
    if int8:  # what a user serves: the int8 ONNX copy, against the teacher in PyTorch
        kept8 = retained({**e, **{f"student_{k}": e.get(f"int8_{k}") for _, k in dev}})
        rows.append(
            ["student, ONNX Runtime int8", f"{s['num_layers']} x {s['hidden_size']}",
             f"{sz['student_params'] / 1e6:.1f}M", f"{int8['disk_bytes'] / 1e6:.1f} MB",
             f"{cpu['teacher_latency_ms'] / int8['latency_ms']:.1f}x",
             f"{int8['throughput'] / cpu['teacher_throughput']:.1f}x"]
            + [pct(e.get(f"int8_{k}")) for _, k in dev]
            + [pct(kept8["share"] if kept8 else None) for _ in kept_header]
            + [pct(e.get("int8_agreement")) if fidelity == "agreement" else "-"])
    align = ["---", "---"] + ["---:"] * (len(header) - 2)
    return [row(header), row(align)] + [row(r) for r in rows]


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def speed_table(report: dict) -> list[str]:
    sz, sp = report["size"], report["speed"]
    lines = [row(["", "teacher", "student", "student vs teacher"]),
             row(["---", "---:", "---:", "---:"]),
             row(["parameters", f"{sz['teacher_params']:,}", f"{sz['student_params']:,}",
                   f"{sz['compression']:.1f}x fewer"]),
             row(["size on disk (fp32 safetensors)", f"{sz['teacher_disk_bytes'] / 1e6:.1f} MB",
                   f"{sz['student_disk_bytes'] / 1e6:.1f} MB",
                   f"{sz['teacher_disk_bytes'] / max(1, sz['student_disk_bytes']):.1f}x smaller"])]
    for device in ("cpu", "cuda"):
        if device not in sp:
            continue
        d = sp[device]
        where = f"{'CPU' if device == 'cpu' else 'GPU'} ({d['name']})"
        lines += [row([f"{where} latency, batch 1", f"{d['teacher_latency_ms']:.1f} ms",
                       f"{d['student_latency_ms']:.1f} ms", f"{d['speedup_latency']:.1f}x faster"]),
                  row([f"{where} throughput, batch {sp['batch_size']}",
                       f"{d['teacher_throughput']:,.0f} sentences/s",
                       f"{d['student_throughput']:,.0f} sentences/s",
                       f"{d['speedup_throughput']:.1f}x faster"])]
        for variant, o in d.get("onnx", {}).items():
            ort = f"ONNX Runtime {variant}, {where}"
            lines += [row([f"{ort}: size on disk", f"{sz['teacher_disk_bytes'] / 1e6:.1f} MB",
                           f"{o['disk_bytes'] / 1e6:.1f} MB",
                           f"{sz['teacher_disk_bytes'] / max(1, o['disk_bytes']):.1f}x smaller"]),
                      row([f"{ort}: latency, batch 1", f"{d['teacher_latency_ms']:.1f} ms",
                           f"{o['latency_ms']:.1f} ms",
                           f"{d['teacher_latency_ms'] / o['latency_ms']:.1f}x faster"]),
                      row([f"{ort}: throughput, batch {sp['batch_size']}",
                           f"{d['teacher_throughput']:,.0f} sentences/s",
                           f"{o['throughput']:,.0f} sentences/s",
                           f"{o['throughput'] / d['teacher_throughput']:.1f}x faster"])]
    return lines


def scores(e: dict | None) -> list[tuple[str, str]]:
    """(header, value) of a fine-tuned model's dev scores."""
    return [(header, pct(e[key])) for header, key in dev_columns(e, prefix="")]
