"""The model card (``README.md`` in the Hugging Face Hub's format) of an exported student and of
a fine-tuned model, built from the run's report: YAML metadata (task, base model, metrics as a
``model-index``), then the results, the recipe, the data and how to load it. It goes into the
model folder, so the folder says what it is once it leaves the run folder."""

from __future__ import annotations

import os

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.config import EMBEDDED
from xdistil_ray.report.tables import results_table, retained, speed_table

CARD = "README.md"

EMBEDDED_TEACHER_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The hub id of the model the embedded default's teacher package ships."""


# (eval key suffix, metric type, readable name) of the scores a card's model-index carries
_METRICS = [("accuracy", "accuracy", "dev accuracy"), ("macro_f1", "f1", "dev macro-F1"),
            ("entity_f1", "f1", "dev entity F1"), ("word_accuracy", "accuracy",
                                                    "dev word accuracy"),
            ("exact", "exact_match", "dev exact match"), ("f1", "f1", "dev F1")]


def hub_id(model: str) -> str | None:
    """``model``'s Hugging Face id, when it is one (not a local or s3:// folder)."""
    if model == EMBEDDED:
        return EMBEDDED_TEACHER_ID
    if "://" in model or model.startswith((".", "/", "~")) or os.path.exists(model) \
            or model.count("/") > 1:
        return None
    return model


def _dataset(value: str) -> tuple[str, str]:
    """(name, type) of a labeled input for the model-index."""
    if value == EMBEDDED:
        return "xdistil_ray embedded task", "xdistil_ray/embedded"
    if value.startswith("hf:"):
        ident = value[3:]
        return ident, ident.split(":")[0]
    return os.path.basename(value.rstrip("/")) or value, "custom"


def _scores(e: dict | None, prefix: str) -> list[tuple[str, str, float]]:
    """(metric type, name, value) of the dev scores in ``e`` under ``prefix``."""
    if not e:
        return []
    return [(kind, name, float(e[f"{prefix}{key}"])) for key, kind, name in _METRICS
            if e.get(f"{prefix}{key}") is not None]


def _metadata(*, task: str, base_model: str | None, model_name: str, dataset: str,
              scores: list[tuple[str, str, float]], tags: list[str]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    name, kind = _dataset(dataset) if dataset else ("", "")
    results = [EvalResult(task_type=task_of(task).pipeline_tag, dataset_type=kind, dataset_name=name,
                          dataset_split="dev", metric_type=metric, metric_name=label,
                          metric_value=round(value, 4))
               for metric, label, value in scores] if dataset else None
    data = ModelCardData(library_name="transformers", pipeline_tag=task_of(task).pipeline_tag,
                         base_model=base_model, tags=tags, model_name=model_name,
                         eval_results=results or None)
    return data.to_yaml()


def _qa_usage(threshold: float | None, qa_cfg) -> list[str]:
    """transformers 5 has no ``question-answering`` pipeline: the Answerer decodes as the run's
    evaluation did, with the no-answer threshold its dev scores used."""
    import math

    if threshold is None or math.isnan(threshold):
        threshold = 0.0
    value = (("-" if threshold < 0 else "") + "math.inf" if math.isinf(threshold)
             else f"{threshold:.4g}")
    windows = ""
    if qa_cfg is not None:
        windows = (f", windows=WindowSettings(max_length={qa_cfg.max_length}, "
                   f"doc_stride={qa_cfg.doc_stride}, max_answer_length={qa_cfg.max_answer_length})")
    return ["```python", "import math", "",
            "from xdistil_ray.export.answer import Answerer",
            "from xdistil_ray.tasks.qa import WindowSettings", "",
            'folder = "path/to/this/folder"  # or its hub id once pushed',
            f"answer = Answerer(folder, threshold={value}{windows})",
            'print(answer(question="Who wrote it?", context="It was written by Ada."))',
            "```", "",
            "The threshold is the one chosen on the dev questions (SQuAD 2.0: no answer when the "
            "model prefers it by more than this; `math.inf` always answers). transformers 5 has "
            "no `question-answering` pipeline; the Answerer splits long contexts into the "
            "windows the model was evaluated on and returns the best span."]


def _usage(task: str, threshold: float | None = None, qa_cfg=None) -> list[str]:
    if task_of(task).spans:
        return _qa_usage(threshold, qa_cfg)
    from xdistil_ray.modeling.models import auto_class

    auto = auto_class(task).__name__
    example = {"sentence": 'classify("The battery lasts all day.")',
               "pair": 'classify({"text": "The battery lasts all day.", '
                       '"text_pair": "The reviewer is satisfied."})',
               "token": 'tag("Ada Lovelace visited Paris.")',
               "qa": 'answer(question="Who wrote it?", context="It was written by Ada.")',
               "none": 'embed("The battery lasts all day.")'}[task]
    name = example.split("(")[0]
    lines = ["```python", f"from transformers import AutoTokenizer, {auto}, pipeline", "",
             'folder = "path/to/this/folder"  # or its hub id once pushed',
             f"model = {auto}.from_pretrained(folder)",
             "tokenizer = AutoTokenizer.from_pretrained(folder)"]
    if task_of(task).head:
        lines += [f'{name} = pipeline("{task_of(task).pipeline_tag}", model=model, tokenizer=tokenizer)',
                  f"print({example})"]
    else:
        lines += ["import torch", "",
                  'inputs = tokenizer(["The battery lasts all day."], return_tensors="pt")',
                  "with torch.no_grad():",
                  "    states = model(**inputs).last_hidden_state  # mean-pool for a vector"]
    return lines + ["```"]


def distillation_card(report: dict, cfg, run_name: str) -> str:
    """The card of ``<run>/student`` from ``report`` (report.json's figures) and ``cfg``."""
    task, t, s, e = report["task"], report["teacher"], report["student"], report["eval"]
    sz, cpu = report["size"], report["speed"]["cpu"]
    scores = _scores(e, "student_")
    if "agreement" in e:
        scores.append(("agreement", "agreement with the teacher (held-out transfer set)",
                       float(e["agreement"])))
    dataset = cfg.labeled.train if task_of(task).labeled else ""
    base = hub_id(cfg.teacher.model)
    meta = _metadata(task=task, base_model=base, model_name=run_name, dataset=dataset,
                     scores=scores, tags=["xdistil_ray", "knowledge-distillation", "xtremedistil"])
    kept = retained(e)
    teacher_name = base or t["model"]
    d = report["data"]
    lines = [
        "---", meta.rstrip(), "---", "",
        f"# {run_name}", "",
        f"A {s['num_layers']}-layer, {s['hidden_size']}-wide student distilled by xdistil_ray "
        f"from `{teacher_name}` ({t['num_layers']} layers x "
        f"{t['hidden_size']}{', fine-tuned on the task by the run' if t['finetuned'] else ''}): "
        f"{sz['compression']:.1f}x fewer parameters, {cpu['speedup_latency']:.1f}x faster on CPU "
        f"at batch 1" + (f", {100 * kept['share']:.1f}% of the teacher's dev "
                         f"{kept['metric'].replace('_', ' ')}" if kept and kept["share"] else "")
        + ".", "",
        "## Results", "", *results_table(report), "",
        *speed_table(report), "",
        *_chosen_lines(report.get("candidates")),
        "## How it was made", "",
        f"Task `{task}`; stages in order (XtremeDistil-style), each from the previous one's "
        "weights:", "",
        "| stage | losses | targets | unfreezing | steps | final loss |",
        "|---|---|---|---|---:|---:|",
        *[f"| {st['name']} | {' + '.join(st['losses'])} | {st['targets']} | "
          f"{'gradual' if st['unfreeze'] else 'none'} | {st['steps']} | {st['final_loss']:.4f} |"
          for st in report["stages"]], "",
        f"Student initialised `{s['init']}`; {s['num_heads']} attention heads, feed-forward "
        f"{s['intermediate_size']}. The run's `config.yaml` and `report.md` hold every "
        "setting and figure.", "",
        *_vocab_lines(s.get("vocab")),
        "## Data", "",
        f"- transfer set: {d['kept']} sentences kept of {d['input_rows']} "
        f"({d.get('from_labeled', 0)} of them labeled training rows), {d['heldout']} held out to "
        "measure agreement",
    ]
    for split, info in d["labeled"].items():
        lines.append(f"- labeled {split}: {info.get('kept', 0)} rows")
    if d["label_names"]:
        lines.append(f"- labels: {', '.join(map(str, d['label_names']))}")
    lines += ["", "## How to use", "",
              *_usage(task, e.get("student_threshold"), getattr(cfg, "qa", None)), ""]
    if report["speed"]["cpu"].get("onnx"):
        lines += _onnx_usage(task, report["speed"]["cpu"]["onnx"])
    return "\n".join(lines)


def _vocab_lines(v: dict | None) -> list[str]:
    """A vocabulary trimmed to the run's data, and what that means for other text."""
    if not v:
        return []
    heldout = v["checks"].get("heldout") or {}
    rate = (f" On held-out sentences of the transfer set {heldout['tokens_outside'] / heldout['tokens']:.2%}"
            " of the teacher's tokens are outside it (the tokenizer splits those words into "
            "smaller pieces)." if heldout.get("tokens") else "")
    return [f"Its vocabulary is the teacher's trimmed to the run's data: {v['kept']:,} of "
            f"{v['teacher_size']:,} tokens (the ones the transfer set and the labeled rows use, "
            "the special tokens and the single characters); on that data it tokenizes as the "
            f"teacher's tokenizer does.{rate}", ""]


def _chosen_lines(sweep: dict | None) -> list[str]:
    """Why this student, of a sweep's candidates."""
    if not sweep:
        return []
    others = ", ".join(f"{r['name']} ({r['shape']}, {r['params'] / 1e6:.1f}M, "
                       f"{100 * (r['score'] or 0):.1f}%)"
                       for r in sweep["rows"] if r["name"] != sweep["chosen"])
    return ["## Why this student", "",
            f"Chosen of {len(sweep['rows'])} candidates trained from the same teacher outputs: "
            f"**{sweep['chosen']}**, {sweep['reason']}"
            + ("" if sweep["met"] else " (no candidate met the rule)") + "."
            + (f" The others: {others}." if others else "")
            + " The run's `report.md` compares them (Pareto front of score against latency and "
            "size).", ""]


_ORT_CLASSES = {"sentence": "ORTModelForSequenceClassification",
                "pair": "ORTModelForSequenceClassification",
                "token": "ORTModelForTokenClassification",
                "qa": "ORTModelForQuestionAnswering", "none": "ORTModelForFeatureExtraction"}


def _onnx_usage(task: str, onnx: dict) -> list[str]:
    sizes = ", ".join(f"{variant} {o['disk_bytes'] / 1e6:.1f} MB" for variant, o in onnx.items())
    return ["### ONNX Runtime", "",
            f"`onnx/model.onnx` (fp32) and `onnx/model_quantized.onnx` (int8 weights, dynamic "
            f"quantization) take `input_ids`, `attention_mask` (and `token_type_ids` where the "
            f"model has them) with any batch and sequence length ({sizes}):", "",
            "```python",
            f"from optimum.onnxruntime import {_ORT_CLASSES[task]}", "",
            f'model = {_ORT_CLASSES[task]}.from_pretrained(folder, subfolder="onnx", '
            'file_name="model_quantized.onnx")',
            "```", ""]


def finetune_card(report: dict, cfg, run_name: str) -> str:
    """The card of a fine-tuning job's ``model/``."""
    task, e, sz, f = report["task"], report["eval"], report["size"], report["finetune"]
    scores = _scores(e, "")
    base = hub_id(cfg.model)
    meta = _metadata(task=task, base_model=base, model_name=run_name, dataset=cfg.labeled.train,
                     scores=scores, tags=["xdistil_ray", "fine-tuned"])
    lines = ["---", meta.rstrip(), "---", "", f"# {run_name}", "",
             f"`{cfg.model}` (init: {report['init']}) fine-tuned with a new task head by "
             f"xdistil_ray on {report['data']['labeled']['train']['kept']} labeled rows "
             f"({', '.join(map(str, report['data']['label_names']))}): {f['steps']} steps.", ""]
    if scores and sz:
        lines += ["## Results", "",
                  "| model | layers x hidden | parameters | " + " | ".join(n for _, n, _ in scores)
                  + " |", "|---|---|---:|" + "---:|" * len(scores),
                  f"| fine-tuned | {sz['num_layers']} x {sz['hidden_size']} | "
                  f"{sz['params'] / 1e6:.1f}M | "
                  + " | ".join(f"{100 * v:.1f}%" for _, _, v in scores) + " |", ""]
    lines += ["## How to use", "", *_usage(task, e.get("threshold"), getattr(cfg, "qa", None)),
              ""]
    return "\n".join(lines)


def add_to(run, rel: str, card: str) -> None:
    """Writes ``card`` as ``rel/README.md`` and commits it with the folder's other files (its
    marker's other fields kept), so that a copy of the committed folder carries it."""
    from xdistil_ray.run.markers import ModelMarker

    marker = run.marker(rel, ModelMarker)
    if marker is None:
        raise FileNotFoundError(f"{run.uri_of(rel)} is not committed")
    data = card.encode()
    run.write_bytes(f"{rel}/{CARD}", data)
    marker.files = {**marker.files, CARD: len(data)}
    run.commit(rel, marker)
