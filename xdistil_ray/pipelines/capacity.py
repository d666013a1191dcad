"""The capacity plan that ``--dry-run`` prints: what a run of this config over this corpus will
cost before it starts. Teacher FLOPs per row from the teacher's shape and the rows' tokens, the
teacher pass's hours on the configured pool, the bytes of teacher outputs and checkpoints in
the run folder, and each stage's steps.

Every figure says whether it is measured (counted in the inputs or the committed data step, or
measured by this project on its build machine) or assumed (the GPUs' peak and utilization,
which a config cannot know: ``plan.gpu_peak_tflops``, ``plan.gpu_mfu``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from xdistil_ray.config import Config, candidate_config
from xdistil_ray.data.readers import CorpusSource
from xdistil_ray.run.markers import CorpusStats, DataMarker, LabeledData, SplitStats
from xdistil_ray.tasks.shapes import task_of

CPU_GFLOPS_PER_THREAD = 70.0
"""The teacher pass's model FLOP/s per CPU thread, measured on this project's build machine
(docs/performance.md, benchmarks/teacher_inference.py: 367 sentences/s of 17.8 real tokens
through the 6 x 384 embedded teacher on 2 actors x 1 thread, AMD EPYC, torch 2.13 CPU):
367 x 3.81e8 FLOP / 2 threads."""

ALL_IN = 0.83
"""The teacher step's rate all in (Ray's start, the model loads, reads and writes) over its
steady rate, measured on the same benchmark: 304 against 367 sentences/s."""

PARQUET_OVERHEAD = 1.03
"""Stored teacher parts (with row ids and flags) over their raw fp16 outputs, measured
(benchmarks/storage.py: 793 B against 772 B per sentence)."""

CHECKPOINT_BYTES_PER_PARAM = 16
"""A training checkpoint per student parameter: its weights (4 B in fp32), Adam's two moments
(8 B) and the module copy the stage keeps beside DeepSpeed's state (4 B). Assumed, not
measured: bf16 on a GPU stores 2 B weights beside 4 B fp32 master weights, the same 16 B."""

KEPT_CHECKPOINTS = 2
"""Checkpoints Ray Train keeps of a stage (``CheckpointConfig(num_to_keep=2)``)."""

_COUNT_LIMIT = 256 << 20
"""Local line files up to this many bytes are counted whole; larger ones (and object storage)
by their bytes over a sample's bytes per line."""
_SAMPLE = 4 << 20


@dataclass
class Count:
    rows: int | None
    how: str


@dataclass
class Plan:
    rows: Count
    tokens: float
    tokens_how: str
    teacher_flops: float
    """Per row (a QA row: one window)."""
    pass_lines: list[str] = field(default_factory=list)
    output_bytes: float = 0.0
    output_how: str = ""
    checkpoint_bytes: float = 0.0
    student_params: int = 0
    candidates: list[tuple[str, int]] = field(default_factory=list)
    """A sweep's candidates and their parameters (each checkpoints its own student)."""
    stage_steps: list[tuple[str, int | None]] = field(default_factory=list)


def flops_per_token(layers: int, hidden: int, intermediate: int, tokens: float) -> float:
    """A transformer encoder's forward FLOPs per token: each block's matrix multiplies (2 x
    its weights: attention 4 h^2, feed-forward 2 h i) and its attention scores and mixing
    (4 x tokens x h)."""
    return layers * (2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * tokens * hidden)


def count_rows(source: CorpusSource | None) -> Count:
    """The rows of an input: parquet from its metadata, line files counted (or, large or in
    object storage, estimated from a sample), other inputs unknown."""
    if source is None:
        return Count(None, "generated when the run starts")
    if source.kind != "files":
        return Count(None, f"a {source.kind} input: not counted")
    if source.fmt == "parquet":
        import pyarrow.parquet as pq

        rows = 0
        for path in source.files:
            if source.fs is None:
                rows += pq.ParquetFile(path).metadata.num_rows
            else:
                with source.fs.open_input_file(path) as f:
                    rows += pq.ParquetFile(f).metadata.num_rows
        return Count(rows, "from the parquet files' metadata")
    if source.fmt not in ("txt", "jsonl", "csv", "tsv"):
        return Count(None, f"{source.fmt} files: not counted")
    header = 1 if source.fmt in ("csv", "tsv") else 0
    sizes = [_size(source, p) for p in source.files]
    if source.fs is None and sum(sizes) <= _COUNT_LIMIT:
        return Count(sum(_lines(p) - header for p in source.files), "counted")
    sample = _head(source, source.files[0])
    lines = max(1, sample.count(b"\n"))
    return Count(round(sum(sizes) * lines / max(1, len(sample))) - header * len(source.files),
                 f"estimated: {sum(sizes) / 1e9:.2f} GB at the first {len(sample) >> 20} MiB's "
                 "bytes per line")


def _size(source: CorpusSource, path: str) -> int:
    if source.fs is None:
        return os.path.getsize(path)
    return source.fs.get_file_info(path).size


def _lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            n += chunk.count(b"\n")
    return n


def _head(source: CorpusSource, path: str) -> bytes:
    if source.fs is None:
        with open(path, "rb") as f:
            return f.read(_SAMPLE)
    with source.fs.open_input_stream(path) as f:
        return f.read(_SAMPLE)


def measured_tokens(run, data: DataMarker, files: int = 2) -> float | None:
    """Mean real tokens per row of the committed corpus (its first ``files`` shards)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from xdistil_ray.run import layout

    lengths = rows = 0
    for shard in data.corpus.shards[:files]:
        with run.fs.open_input_file(run.path(layout.CORPUS, shard.file)) as f:
            column = pq.read_table(f, columns=["input_ids"]).column("input_ids")
        lengths += pc.sum(pc.list_value_length(column)).as_py() or 0
        rows += len(column)
    return lengths / rows if rows else None


def plan(cfg: Config, run, inputs, data: DataMarker | None) -> Plan:
    """The plan for ``cfg`` over its inputs; ``data``: the committed data step's marker, whose
    counts replace the inputs' where the step is done."""
    from transformers import AutoConfig

    from xdistil_ray.config.checks import stage_data
    from xdistil_ray.distill import stage_plan
    from xdistil_ray.teacher.step import outputs_needed

    teacher = AutoConfig.from_pretrained(inputs.teacher_path)
    task = task_of(cfg.task)
    if data is not None and data.corpus is not None:
        rows = Count(data.corpus.kept, "kept by the committed data step")
        mean = measured_tokens(run, data)
        tokens, tokens_how = ((mean, "measured in data/corpus") if mean
                              else (cfg.corpus.max_length, "corpus.max_length"))
    else:
        rows = count_rows(inputs.corpus)
        if rows.rows is not None and rows.rows == 0:
            rows = Count(None, rows.how)
        tokens, tokens_how = (float(cfg.windows().max_length if task.spans
                                    else cfg.corpus.max_length),
                              "at most: max_length (measured once the data step is done)")
    per_token = flops_per_token(teacher.num_hidden_layers, teacher.hidden_size,
                                teacher.intermediate_size, tokens)
    out = Plan(rows, tokens, tokens_how, per_token * tokens)
    out.pass_lines = _pass_lines(cfg, out)
    out.output_bytes, out.output_how = _output_bytes(cfg, teacher, tokens, data,
                                                     outputs_needed(cfg))
    out.student_params = student_params(cfg, teacher)
    out.checkpoint_bytes = CHECKPOINT_BYTES_PER_PARAM * out.student_params
    out.candidates = [(c.name, student_params(candidate_config(cfg, c), teacher))
                      for c in cfg.candidates]
    if data is not None and data.corpus is not None:
        steps_data, known = data, {"labeled": True, "corpus": True}
    else:
        labeled = count_rows(inputs.labeled.get("train")).rows
        steps_data = _assumed_data(cfg, rows.rows, labeled)
        known = {"labeled": labeled is not None, "corpus": rows.rows is not None}
    for k, stage in enumerate(cfg.stages):
        out.stage_steps.append((stage.name, stage_plan.stage_steps(cfg, k, steps_data)
                                if known[stage_data(stage)] else None))
    return out


def _pass_lines(cfg: Config, p: Plan) -> list[str]:
    inf = cfg.teacher.inference
    actors = max(inf.num_actors, inf.max_actors)
    if inf.num_gpus_per_actor:
        gpus = actors * inf.num_gpus_per_actor
        rate = gpus * cfg.plan.gpu_peak_tflops * 1e12 * cfg.plan.gpu_mfu
        how = (f"{actors} actor(s) x {inf.num_gpus_per_actor:g} GPU at "
               f"{cfg.plan.gpu_peak_tflops:g} TFLOP/s x MFU {cfg.plan.gpu_mfu:g} (assumed: "
               "plan.gpu_peak_tflops, plan.gpu_mfu)")
    else:
        threads = actors * max(1, int(inf.num_cpus_per_actor))
        rate = threads * CPU_GFLOPS_PER_THREAD * 1e9
        how = (f"{actors} actor(s) x {threads // actors} thread(s) at "
               f"{CPU_GFLOPS_PER_THREAD:g} GFLOP/s per thread (measured on this project's "
               "2-core build machine)")
    lines = [f"{how}: {rate * 3600 / p.teacher_flops:,.0f} rows an hour steady"]
    if p.rows.rows:
        hours = p.rows.rows * p.teacher_flops / rate / 3600
        lines.append(f"the pass: {hours:,.2f} h steady ({p.rows.rows * p.teacher_flops:.2e} "
                     f"FLOP), about {hours / ALL_IN:,.2f} h with Ray's start, the loads, reads "
                     f"and writes (x 1/{ALL_IN}, measured)")
    return lines


def _output_bytes(cfg: Config, teacher, tokens: float, data: DataMarker | None,
                  outputs: tuple[str, ...]) -> tuple[float, str]:
    """Stored teacher outputs per row (raw fp16 x the measured parquet overhead)."""
    task = task_of(cfg.task)
    labels = len(data.label_names) if data is not None and data.label_names else \
        getattr(teacher, "num_labels", 2)
    top_k = cfg.teacher.inference.top_k
    parts, size = [], 0.0
    if "logits" in outputs:
        if task.spans:
            logits, what = 2 * 2 * tokens, "start / end logits per token"
        elif top_k:
            logits, what = top_k * 6 + 2, f"top-{top_k} logits"
        else:
            logits, what = labels * 2 * (tokens if task.per_token else 1), f"{labels} logits"
        parts.append(f"{what} {logits:,.0f} B")
        size += logits
    if "hidden" in outputs:
        hidden = teacher.hidden_size * 2 * (tokens if task.per_token else 1)
        parts.append(f"{teacher.hidden_size}-wide states {hidden:,.0f} B")
        size += hidden
    if not parts:
        return 0.0, "none stored (every stage's targets are online)"
    return size * PARQUET_OVERHEAD, (" + ".join(parts) + f", fp16, x {PARQUET_OVERHEAD} for the "
                                     "parquet parts (measured)")


def student_params(cfg: Config, teacher) -> int:
    """The student's parameters from its shape (embeddings of the teacher's vocabulary and
    positions, the blocks, a classifier): an estimate the student init step makes exact (with
    ``student.vocab: data``, an upper bound: the kept tokens are known once it has run)."""
    s = cfg.student
    h, i = s.hidden_size, s.intermediate_size
    embeddings = (teacher.vocab_size + getattr(teacher, "max_position_embeddings", 512) + 2) * h
    block = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
    return embeddings + 2 * h + s.num_layers * block + h * h + h


def _assumed_data(cfg: Config, rows: int | None, labeled: int | None) -> DataMarker:
    """A data marker with the inputs' counts (no duplicates, the configured held-out share;
    an unknown count as 0) for the stages' steps before the data step has run."""
    rows = rows or 0
    if cfg.corpus.with_labeled and labeled:
        rows += labeled
    corpus = CorpusStats(input_rows=rows, kept=rows, shards=[],
                         heldout=round(rows * cfg.corpus.heldout_fraction))
    train = SplitStats(labeled or 0, labeled or 0, [])
    return DataMarker(corpus=corpus, labeled=LabeledData({"train": train}))


def describe(p: Plan, cfg: Config) -> list[str]:
    """The plan as ``--dry-run`` prints it."""
    def size(b: float) -> str:
        return f"{b / 1e9:,.2f} GB" if b >= 1e8 else f"{b / 1e6:,.1f} MB"

    rows = p.rows.rows
    lines = ["", "[xdistil] capacity plan: "
             + (f"{rows:,} corpus rows ({p.rows.how})" if rows is not None
                else f"corpus rows unknown ({p.rows.how}); figures per row"),
             f"  teacher pass: {p.teacher_flops:.2e} FLOP per row ({p.tokens:.1f} tokens: "
             f"{p.tokens_how})"]
    lines += [f"    {line}" for line in p.pass_lines]
    stored = f"{size(p.output_bytes * rows)}" if rows else "-"
    lines.append(f"  teacher outputs: {p.output_bytes:,.0f} B per row ({p.output_how}); "
                 f"in all {stored}")
    if p.candidates:
        trimmed = {c.name for c in cfg.candidates if c.student.vocab == "data"}
        each = ", ".join(f"{name} {'at most ' if name in trimmed else ''}"
                         f"{size(CHECKPOINT_BYTES_PER_PARAM * n)} ({n / 1e6:.1f}M parameters"
                         f"{' with the whole vocabulary' if name in trimmed else ''})"
                         for name, n in p.candidates)
        lines.append(f"  checkpoints, each candidate's own: {each} ({CHECKPOINT_BYTES_PER_PARAM} "
                     f"B per parameter, assumed), {KEPT_CHECKPOINTS} kept while a stage trains; "
                     "the candidates train one after another on the same stages' steps")
    else:
        about = "at most" if cfg.student.vocab == "data" else "about"
        lines.append(f"  checkpoints: {size(p.checkpoint_bytes)} each for a student of {about} "
                     f"{p.student_params / 1e6:.1f}M parameters ({CHECKPOINT_BYTES_PER_PARAM} B "
                     f"per parameter, assumed), {KEPT_CHECKPOINTS} kept while a stage trains")
    steps = ", ".join(f"{name} {n:,}" if n is not None else f"{name} ?"
                      for name, n in p.stage_steps)
    lines.append(f"  stages' steps: {steps} (batch per worker x {cfg.train.num_workers} "
                 "worker(s))")
    return lines
