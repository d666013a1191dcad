"""Step ``report``: ``report.json`` (figures for scripts), ``report.md`` (for people, in the
shape of the XtremeDistil papers' results tables) and its plots beside them
(``loss_curves.png``, ``speed_size.png``)."""

from __future__ import annotations

import logging
import posixpath
import time

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.observe import console
from xdistil_ray.report import model_card
from xdistil_ray.report import plots
from xdistil_ray.report import selection
from xdistil_ray.report import tables
from xdistil_ray.observe import tensorboard_log
from xdistil_ray.config import Config
from xdistil_ray.run.markers import (DataMarker, EvalMarker, InitMarker, StageMarker,
                                     TeacherMarker)
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.distill.checkpoint import LOSSES_FILE
from xdistil_ray.run.steps import Context, Planned, Step


log = logging.getLogger(__name__)

LOSS_PLOT = layout.LOSS_PLOT
SPEED_PLOT = layout.SPEED_PLOT
STUDENT = layout.STUDENT
"""The exported student's folder, which gets the model card."""


def build(cfg: Config, *, data: DataMarker, teacher: TeacherMarker | None, init: InitMarker,
          stages: list[StageMarker], evaluation: EvalMarker, finetune: StageMarker | None,
          seconds: float) -> dict:
    """The report's figures, from the steps' markers (``finetune``: the teacher fine-tune's,
    when the run fine-tuned it)."""
    corpus = data.corpus
    size = evaluation.size
    shape = init.student_shape
    return {
        "data": {
            "input_rows": corpus.input_rows, "kept": corpus.kept,
            "dropped": corpus.dropped, "truncated": corpus.truncated,
            "heldout": corpus.heldout, "shards": len(corpus.shards),
            "from_labeled": corpus.labeled_rows,
            "labeled": _splits(data),
            "label_names": data.label_names,
        },
        "task": cfg.task,
        "teacher": {"model": cfg.teacher.model, "params": init.teacher_params,
                    "num_layers": size["teacher_layers"], "hidden_size": size["teacher_hidden"],
                    "finetuned": finetune is not None,
                    "finetune": None if finetune is None else {
                        "steps": finetune.steps, "validation": finetune.validation}},
        "student": {"params": init.student_params, "init": cfg.student.init,
                    "num_layers": shape["num_hidden_layers"],
                    "hidden_size": shape["hidden_size"],
                    "num_heads": shape["num_attention_heads"],
                    "intermediate_size": shape["intermediate_size"],
                    "vocab": {k: v for k, v in init.vocab.items() if k != "teacher_ids"}},
        "teacher_inference": None if teacher is None else {
            "rows": teacher.rows, "outputs": teacher.outputs,
            "shards_run": teacher.shards_run, "shards_skipped": teacher.shards_skipped,
            "seconds": teacher.seconds},
        "stages": [{"name": s.name, "losses": s.losses, "targets": s.targets,
                    "unfreeze": s.unfreeze, "steps": s.steps,
                    "planned_steps": s.planned_steps or s.steps,
                    "steps_per_second": s.steps_per_second,
                    "first_loss": s.first_loss, "final_loss": s.final_loss,
                    "resumed_from": s.resumed_from,
                    "validation": s.validation,
                    "checkpoint_bytes": s.checkpoint_bytes,
                    "seconds": s.seconds} for s in stages],
        "eval": evaluation.eval,
        "retained": tables.retained(evaluation.eval),
        "speed": evaluation.speed,
        "size": size,
        "plots": {"loss_curves": LOSS_PLOT, "speed_size": SPEED_PLOT},
        "seconds": seconds,
    }


def _fidelity_lines(e: dict) -> list[str]:
    unit = "tokens of " if "teacher_entity_f1" in e else ""
    lines = []
    if "agreement_f1" in e:  # extractive QA
        lines += [f"- agreement of the answers on {e['heldout_questions']} held-out questions "
                  f"(the student's against the teacher's, SQuAD-normalized): exact "
                  f"{tables.pct(e['agreement'])}, F1 {tables.pct(e['agreement_f1'])}"]
    elif "agreement" in e:
        lines += [f"- agreement (same argmax as the teacher, over {unit}the sentences): "
                  f"{tables.pct(e['agreement'])}",
                  f"- KL(teacher || student) of the predicted distributions: "
                  f"{e['kl_divergence']:.4f} nats"]
    cosine = "-" if e.get("hidden_cosine") is None else f"{e['hidden_cosine']:.3f}"
    lines += [f"- last-layer sentence representations: cosine {cosine} after a linear map to the "
              "teacher's width (fitted on half of the sentences, measured on the other half); "
              f"linear CKA {e['representation_cka']:.3f}"]
    return lines


def _dev_source(data: dict) -> str:
    """Where the dev rows came from, when not from ``labeled.dev``."""
    share = data["labeled"].get("dev", {}).get("from_train")
    return (f" (a {share:.0%} share of labeled.train held out: no labeled.dev given)"
            if share else "")


def markdown(report: dict) -> str:
    d, e = report["data"], report["eval"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(d["dropped"].items())) or "none"
    ti = report["teacher_inference"]
    s = report["student"]
    dev_note = (f"Dev scores on {e['dev_rows']} labeled dev rows{_dev_source(d)}. "
                if "dev_rows" in e else "No labeled dev data: fidelity only. ")
    qa = task_of(report["task"]).spans
    unit = "question" if qa else "sentence"  # QA rows are questions (of one or more windows)
    lines = [
        f"# xdistil_ray report: {report['task']} task, L{report['teacher']['num_layers']}-"
        f"H{report['teacher']['hidden_size']} teacher -> L{s['num_layers']}-H{s['hidden_size']} "
        "student", "",
        *tables.results_table(report), "",
        f"{dev_note}Speedups: the teacher's time over the student's on the same machine "
        f"({report['speed']['cpu']['name']}), latency at batch 1 and throughput at batch "
        f"{report['speed']['batch_size']}"
        + ("; the ONNX Runtime rows are the exported copies (student/onnx/), timed against the "
           "teacher in PyTorch" if report["speed"]["cpu"].get("onnx") else "") + ".", "",
        f"## Fidelity to the teacher ({e['heldout_rows']} held-out transfer {unit}s)", "",
        *_fidelity_lines(e), "",
        "## Size and speed", "",
        *tables.speed_table(report), "",
        f"![Size and speed]({SPEED_PLOT})", "",
        *_vocab_lines(report["student"].get("vocab")),
        *_candidate_lines(report),
        "## Training" + (f" (the exported student, {report['candidates']['chosen']})"
                         if "candidates" in report else ""), "",
        "| stage | losses | targets | unfreezing | steps | steps/s | resumed from step | "
        "first loss | final loss | seconds |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for st in report["stages"]:
        resumed = ", ".join(str(step) for step in st["resumed_from"]) or "-"
        rate = "-" if st.get("steps_per_second") is None else f"{st['steps_per_second']:.1f}"
        lines.append(f"| {st['name']} | {' + '.join(st['losses'])} | {st['targets']} | "
                     f"{'gradual' if st['unfreeze'] else 'none'} | {st['steps']} | {rate} | "
                     f"{resumed} | {st['first_loss']:.4f} | {st['final_loss']:.4f} | "
                     f"{st['seconds']:.0f} |")
    ft = report["teacher"].get("finetune")
    validated = ([("teacher fine-tune", ft["validation"])] if ft and ft["validation"] else []) + [
        (st["name"], st["validation"]) for st in report["stages"] if st.get("validation")]
    lines += ["", f"![Loss curves]({LOSS_PLOT})", "", *_checkpoint_lines(report["stages"])]
    if validated:
        lines += ["Validation: the dev score after each epoch, or the held-out transfer loss of "
                  "a stage on the transfer set (the kept weights end the step):", ""]
        lines += [_validation_line(name, v) for name, v in validated] + [""]
    lines += [
        "## Data", "",
        f"- transfer set: input rows {d['input_rows']} (of them {d.get('from_labeled', 0)} "
        f"labeled training rows) = kept {d['kept']} + dropped "
        f"{sum(d['dropped'].values())} ({dropped}); truncated {d['truncated']}",
        f"- {d['shards']} shards; {d['heldout']} {unit}s held out for fidelity",
        f"- teacher outputs ({', '.join(ti['outputs'])}) for {ti['rows']} "
        f"{'window' if qa else 'sentence'}s in "
        f"{ti['seconds']:.0f}s; shards run {ti['shards_run']}, skipped {ti['shards_skipped']} "
        "(committed by an earlier attempt)"
        if ti else "- no stored teacher outputs (all targets online)",
        "", f"Total wall time of this invocation: {report['seconds']:.0f}s", ""]
    return "\n".join(lines)


def _vocab_lines(v: dict | None) -> list[str]:
    """A trimmed vocabulary: what was kept and how its tokenizer compares with the teacher's."""
    if not v:
        return []
    lines = ["## Vocabulary (trimmed to the data)", "",
             f"The student keeps {v['kept']:,} of the teacher's {v['teacher_size']:,} tokens "
             f"({v['seen']:,} seen in {v['transfer_rows']:,} transfer and {v['labeled_rows']:,} "
             "labeled training rows, the special tokens and the single characters): "
             f"{v['params_before']:,} -> {v['params_after']:,} parameters. The trimmed tokenizer "
             "against the teacher's:", "",
             "| sentences | compared | tokenized otherwise | teacher tokens outside the vocabulary |"
             " unknown (teacher / trimmed) |", "|---|---:|---:|---:|---:|"]
    names = {"transfer": "transfer set", "heldout": "held-out transfer", "dev": "labeled dev"}
    for name, c in v["checks"].items():
        if not c["rows"]:
            continue
        lines.append(f"| {names.get(name, name)} | {c['rows']:,} | "
                     f"{c['rows_differ'] / c['rows']:.2%} | "
                     f"{c['tokens_outside'] / max(1, c['tokens']):.2%} | "
                     f"{c['unknown_teacher']:,} / {c['unknown_student']:,} |")
    return lines + ["", "Dev and fidelity scores read the stored rows (the teacher's "
                    "tokenization) with tokens outside the vocabulary as unknown; the exported "
                    "tokenizer splits those into smaller pieces instead.", ""]


def _candidate_lines(report: dict) -> list[str]:
    """A sweep's candidates: their table, the chosen one and why, the plot."""
    if "candidates" not in report:
        return []
    return [*selection.markdown(report["candidates"]),
            f"![Candidates]({report['plots']['candidates']})", ""]


def _checkpoint_lines(stages: list[dict]) -> list[str]:
    """The bytes each rank wrote into each stage's last checkpoint (none recorded: no line)."""
    written = [st for st in stages if st.get("checkpoint_bytes")]
    if not written:
        return []
    return ["Checkpoints: the bytes each rank wrote into a stage's last checkpoint (rank 0 "
            "adds the progress, the full module and, at the end, the student): "
            + "; ".join(f"{st['name']} " + " / ".join(f"{b / 1e6:.1f} MB"
                                                      for b in st["checkpoint_bytes"])
                        for st in written), ""]


def _validation_line(name: str, v: dict) -> str:
    stopped = ", stopped early" if v["stopped_early"] else ""
    if v["metric"] == "heldout_loss":
        checks = ", ".join(f"{loss:.4f}" for _, _, loss in v["scores"])
        starts = "".join(f"; phase {p} started early at step {s}" for p, s in
                         v.get("phase_starts", []))
        return (f"- {name}: held-out loss every {v['every']} steps {checks}; kept step "
                f"{v['kept_step']}{starts}{stopped}")
    scores = ", ".join(f"{100 * score:.1f}%" for _, _, score in v["scores"])
    return f"- {name}: dev {v['metric'].replace('_', ' ')} by epoch {scores}; kept epoch " \
           f"{v['kept_epoch']}{stopped}"


def _curves(run: RunFolder, stage_folders: list[tuple[str, str]]) -> list[dict]:
    curves = []
    for title, rel in stage_folders:
        losses = run.read_json(posixpath.join(rel, LOSSES_FILE))
        curves.append({"title": f"{title} ({' + '.join(losses['losses'])})",
                       "history": losses["history"],
                       "resumed_from": losses.get("resumed_from", [])})
    return curves


def write(run: RunFolder, cfg: Config, *, stage_folders: list[tuple[str, str]],
          sweep: dict | None = None, **kwargs) -> dict:
    """Writes ``report.json``, ``report.md`` and the plots; ``stage_folders``: (title, folder)
    of every committed training stage, in order; ``sweep``: a sweep's candidates
    (:func:`xdistil_ray.report.selection.section`)."""
    report = build(cfg, **kwargs)
    run.write_bytes(LOSS_PLOT, plots.loss_curves(_curves(run, stage_folders)))
    run.write_bytes(SPEED_PLOT, plots.speed_size(report["size"], report["speed"]))
    if sweep is not None:
        report["candidates"] = sweep
        report["plots"]["candidates"] = layout.CANDIDATES_PLOT
        run.write_bytes(layout.CANDIDATES_PLOT, plots.candidates(sweep))
    run.write_json(layout.REPORT_JSON, report)
    run.write_text(layout.REPORT_MD, markdown(report))
    if run.marker(STUDENT) is not None:
        model_card.add_to(run, STUDENT, model_card.distillation_card(report, cfg, run_name(run)))
    tensorboard_log.write_report(run, report, settings(cfg))
    return report


def settings(cfg: Config) -> dict:
    """The settings a run is compared on (TensorBoard's hparams)."""
    s = cfg.student
    return {"task": cfg.task, "teacher.model": cfg.teacher.model, "seed": cfg.seed,
            "student.num_layers": s.num_layers, "student.hidden_size": s.hidden_size,
            "student.init": s.init, "stages": " -> ".join(st.name for st in cfg.stages),
            "corpus.path": cfg.corpus.path}


def run_name(run: RunFolder) -> str:
    """The run folder's last name (the model card's title and model-index name)."""
    return posixpath.basename(run.uri.rstrip("/")) or "student"


def headline(report: dict) -> str:
    """One line of the figures a user looks at first."""
    e, sz, cpu = report["eval"], report["size"], report["speed"]["cpu"]
    parts = []
    dev = tables.dev_columns(report["eval"])
    if dev:
        header, key = next(((h, k) for h, k in dev if k == "f1"), dev[0])  # QA: F1 first
        kept = tables.retained(e)
        parts.append(f"{header} student {tables.pct(e[f'student_{key}'])} / teacher "
                     f"{tables.pct(e[f'teacher_{key}'])}"
                     + (f" ({tables.pct(kept['share'])} retained)" if kept else ""))
    parts.append(f"agreement {tables.pct(e['agreement'])}" if "agreement" in e
                 else f"CKA {e['representation_cka']:.3f}")
    parts.append(f"{sz['compression']:.1f}x fewer parameters")
    parts.append(f"CPU {cpu['speedup_latency']:.1f}x faster at batch 1, "
                 f"{cpu['speedup_throughput']:.1f}x at batch {report['speed']['batch_size']}")
    int8 = cpu.get("onnx", {}).get("int8")
    if int8:
        score = f"{header} {tables.pct(e.get(f'int8_{key}'))}, " if dev else ""
        parts.append(f"int8 ONNX: {score}{cpu['teacher_latency_ms'] / int8['latency_ms']:.1f}x "
                     f"faster at batch 1, {int8['disk_bytes'] / 1e6:.1f} MB")
    return "; ".join(parts)


def summary(run: RunFolder, report: dict) -> str:
    """What the driver prints at the end: where the student and the report are, the headline."""
    sweep = report.get("candidates")
    chosen = (f"[xdistil] chosen of {len(sweep['rows'])} candidates: {sweep['chosen']}: "
              f"{sweep['reason']}{'' if sweep['met'] else ' (THE RULE WAS NOT MET)'}\n"
              if sweep else "")
    return (f"[xdistil] done in {report['seconds']:.0f}s\n"
            f"[xdistil] student: {run.uri_of('student')} "
            f"({report['size']['student_params'] / 1e6:.1f}M parameters, a Hugging Face folder)\n"
            + chosen +
            f"[xdistil] report:  {run.uri_of('report.md')} (+ {LOSS_PLOT}, {SPEED_PLOT}, "
            "report.json)\n"
            f"[xdistil] {headline(report)}")


def _splits(data: DataMarker) -> dict:
    return {split: info.figures() for split, info in data.labeled.splits.items()}


def write_finetune(run: RunFolder, cfg, *, data: DataMarker, stage: StageMarker,
                   evaluation: EvalMarker | None, stage_folder: str, seconds: float,
                   model_rel: str = "") -> dict:
    """The fine-tuning job's ``report.json``, ``report.md`` and ``loss_curves.png``."""
    report = {
        "task": cfg.task, "model": cfg.model, "init": cfg.init,
        "data": {"labeled": _splits(data), "label_names": data.label_names},
        "finetune": {k: getattr(stage, k) for k in ("steps", "steps_per_second", "first_loss",
                                                    "final_loss", "resumed_from", "seconds",
                                                    "validation")},
        "eval": evaluation.eval if evaluation else None,
        "size": evaluation.size if evaluation else None,
        "plots": {"loss_curves": LOSS_PLOT},
        "seconds": seconds,
    }
    run.write_bytes(LOSS_PLOT, plots.loss_curves(_curves(run, [("fine-tune", stage_folder)])))
    run.write_json(layout.REPORT_JSON, report)
    run.write_text(layout.REPORT_MD, finetune_markdown(report))
    if model_rel and run.marker(model_rel) is not None:
        model_card.add_to(run, model_rel, model_card.finetune_card(report, cfg, run_name(run)))
    return report


def finetune_markdown(report: dict) -> str:
    e, sz, f = report["eval"], report["size"], report["finetune"]
    scores = tables.scores(e)
    train = report["data"]["labeled"]["train"]
    lines = [f"# xdistil_ray fine-tune report: {report['task']} task", "",
             f"Model: `{report['model']}` (init: {report['init']}), fine-tuned with a new task "
             f"head on {train['kept']} labeled rows ({', '.join(report['data']['label_names'])}).",
             ""]
    if scores:
        header = ["model", "layers x hidden", "parameters"] + [h for h, _ in scores]
        lines += [tables.row(header), tables.row(["---"] * 2 + ["---:"] * (len(header) - 2)),
                  tables.row([f"fine-tuned ({report['init']})",
                              f"{sz['num_layers']} x {sz['hidden_size']}",
                              f"{sz['params'] / 1e6:.1f}M"] + [v for _, v in scores]), "",
                  f"Dev scores on {e['dev_rows']} labeled dev rows{_dev_source(report['data'])}.",
                  ""]
    else:
        lines += ["No labeled dev data (labeled.dev): no dev scores.", ""]
    rate = "-" if f.get("steps_per_second") is None else f"{f['steps_per_second']:.1f}"
    lines += ["## Training", "",
              f"{f['steps']} steps ({rate} steps/s), loss {f['first_loss']:.4f} -> "
              f"{f['final_loss']:.4f}, {f['seconds']:.0f}s"
              + (f"; resumed from step {', '.join(map(str, f['resumed_from']))}"
                 if f.get("resumed_from") else ""), "",
              *([_validation_line("validation", f["validation"]), ""]
                if f.get("validation") else []),
              f"![Loss curve]({LOSS_PLOT})", "",
              f"Total wall time of this invocation: {report['seconds']:.0f}s", ""]
    return "\n".join(lines)


def finetune_summary(run: RunFolder, report: dict, model_rel: str) -> str:
    scores = "; ".join(f"{h} {v}" for h, v in tables.scores(report["eval"])) or "no dev data"
    return (f"[xdistil] done in {report['seconds']:.0f}s\n"
            f"[xdistil] model:  {run.uri_of(model_rel)} (a Hugging Face folder)\n"
            f"[xdistil] report: {run.uri_of('report.md')} (+ {LOSS_PLOT}, report.json)\n"
            f"[xdistil] {scores}")


class ReportStep(Step):
    """``report.json``, ``report.md`` and the plots, written on every run (no marker), then the
    run sent to the trackers configured and its summary shown."""

    name = "report"
    folder = layout.REPORT_MD
    committed = False

    def run(self, ctx: Context, fp: dict) -> dict:
        from xdistil_ray.distill.step import StagesStep, clean_checkpoints
        from xdistil_ray.teacher.finetune import FOLDER as TEACHER_FINETUNE

        run, chosen = ctx.run, ctx.chosen()
        # Checkpoints of committed stages go once the run has moved on (Ray Train's controller
        # may still write into its folder just after fit returns).
        clean_checkpoints(run, TEACHER_FINETUNE, [TEACHER_FINETUNE])
        for student in list(ctx.candidates.values()) or [ctx]:
            clean_checkpoints(run, StagesStep().where(student),
                              [rel for rel, _ in StagesStep().parts(student)])
        cfg = chosen.cfg
        trained = [(f"{k + 1}. {s.name}", rel) for k, (s, (rel, _)) in enumerate(
            zip(cfg.stages, StagesStep().parts(chosen)))]
        if ctx.teacher.in_run:
            trained.insert(0, ("teacher fine-tune", TEACHER_FINETUNE))
        result = write(run, cfg, stage_folders=trained, data=ctx.data,
                       teacher=ctx.teacher_marker, init=chosen.init_marker,
                       stages=chosen.stage_markers, evaluation=chosen.eval_marker,
                       finetune=ctx.teacher_finetune if ctx.teacher.in_run else None,
                       seconds=round(time.time() - ctx.started, 1), sweep=_sweep(ctx))
        _track(run, cfg, result, trained)
        console.show(summary(run, result))
        return result

    def use(self, ctx: Context, marker: dict | None) -> None:
        ctx.report = marker

    def plan(self, ctx: Context) -> list[Planned]:
        return [Planned(self.name, self.folder, "to run", ["every step's marker"], "driver",
                        f"report.json, report.md, {LOSS_PLOT}, {SPEED_PLOT}")]


def _sweep(ctx: Context) -> dict | None:
    """A sweep's ``candidates`` section of the report (None for a run of one student)."""
    if ctx.choice is None or not ctx.candidates:
        return None
    rows = [selection.figures(name, c.eval_marker, c.init_marker)
            for name, c in ctx.candidates.items()]
    choice = selection.Choice(ctx.choice.candidate, ctx.choice.met, ctx.choice.reason)
    return selection.section(rows, choice, ctx.cfg.select)


def _track(run: RunFolder, cfg: Config, result: dict, trained: list[tuple[str, str]]) -> None:
    """Sends the run to MLflow and W&B where configured."""
    if cfg.tracking.mlflow_uri:
        from xdistil_ray.report import mlflow_log

        run_id = mlflow_log.log_run(run, cfg, result, trained)
        log.info(f"MLflow: run {run_id} in experiment {cfg.tracking.mlflow_experiment!r} "
                 f"at {cfg.tracking.mlflow_uri}")
    if cfg.tracking.wandb_project:
        from xdistil_ray.report import wandb_log

        run_id = wandb_log.log_run(run, cfg, result, trained)
        log.info(f"W&B: run {run_id} in project {cfg.tracking.wandb_project!r}")
