"""The run folder's markers, typed and versioned: one dataclass per kind of step, written
(:func:`dump`) and read (:func:`load`) here and nowhere else.

A committed folder's ``COMPLETE`` marker names its files with their sizes (what a resumed run
checks before it skips the step), the config fingerprint the step ran with (what a changed
setting is checked against) and the step's figures that later steps and the report read (row
counts, shards, steps, losses, scores). A resumable step's ``STARTED`` marker holds the
fingerprint it started with.

Versions. ``version`` 1 is the first typed marker. A marker without a version was written
before markers were typed (xdistil_ray up to ec4eb94): its fields are version 1's, and it reads
as such. A marker of a later version than :data:`VERSION` (written by a newer xdistil_ray) is
refused before any work, naming both versions: running the step again would overwrite the
newer code's work with the older code's. A marker that lacks a field its version requires
(cut short, edited by hand) counts as absent, as one that does not parse does: the step runs
again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from xdistil_ray.errors import ConfigError

log = logging.getLogger(__name__)

VERSION = 1
"""The version this code writes; it reads every version up to this one."""

COMPLETE = "COMPLETE"
"""A committed folder's marker file."""
STARTED = "STARTED"
"""A resumable step's marker of the fingerprint it started with."""


class MarkerVersionError(ConfigError):
    """A marker written by a newer xdistil_ray than this one."""


M = TypeVar("M", bound="Marker")
T = TypeVar("T")


@dataclass
class Marker:
    """A committed folder: its files ({path relative to the folder: bytes}; None until
    :meth:`RunFolder.commit` lists the folder), the fingerprint its step ran with, and the
    marker's version. Each step's kind adds its figures."""

    files: dict[str, int] | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    kind: ClassVar[str] = "marker"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ data

@dataclass
class FileRows:
    """One Parquet file of a split or of the corpus: its name, rows and bytes."""

    file: str
    rows: int
    bytes: int = 0


@dataclass
class SplitStats:
    """A labeled split (``train``, ``dev``, ``test``) as the data step kept it."""

    input_rows: int
    kept: int
    """Rows kept (QA: questions)."""
    files: list[FileRows]
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    windows: int | None = None
    """QA: the kept questions' windows (the rows a stage trains on)."""
    to_dev: int | None = None
    """``train``: rows held out as the dev split (``labeled.dev_fraction``)."""
    from_train: float | None = None
    """``dev``: the share of ``labeled.train`` it was carved from, when no dev was given."""

    @property
    def training_rows(self) -> int:
        """Rows a stage trains on per epoch: the QA windows, else the rows."""
        return self.kept if self.windows is None else self.windows

    def figures(self) -> dict:
        """Its counts, as the report shows them (no file list)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k != "files" and v is not None}


@dataclass
class CorpusStats:
    """The transfer set: rows read, kept and dropped (by reason), its shards (the teacher
    step's unit of work) and its held-out rows (fidelity, early stopping)."""

    input_rows: int
    kept: int
    shards: list[FileRows]
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    heldout: int = 0
    labeled_rows: int = 0
    """Labeled training rows added to the transfer set (``corpus.with_labeled``)."""
    windows: int | None = None

    @property
    def training_rows(self) -> int:
        """Rows (QA: windows) the transfer stages train on per epoch, held-out ones included."""
        return self.kept if self.windows is None else self.windows


@dataclass
class LabeledData:
    splits: dict[str, SplitStats] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)


@dataclass
class DataMarker(Marker):
    """``data/``: the corpus (absent in the fine-tuning job) and the labeled splits."""

    kind: ClassVar[str] = "data"

    labeled: LabeledData = field(default_factory=LabeledData)
    corpus: CorpusStats | None = None
    pairs: bool = False
    task: str = "sentence"
    seconds: float = 0.0

    @property
    def label_names(self) -> list[str]:
        return self.labeled.label_names

    def split(self, name: str) -> SplitStats | None:
        return self.labeled.splits.get(name)


# ------------------------------------------------------------------ teacher

@dataclass
class ShardMarker(Marker):
    """``teacher/shards/<shard>/``: one corpus shard's teacher outputs."""

    kind: ClassVar[str] = "teacher shard"

    rows: int = 0


@dataclass
class TeacherMarker(Marker):
    """``teacher/``: the teacher's outputs for every shard."""

    kind: ClassVar[str] = "teacher"

    rows: int = 0
    outputs: list[str] = field(default_factory=list)
    top_k: int = 0
    shards_skipped: int = 0
    shards_run: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------ student and training

@dataclass
class InitMarker(Marker):
    """``student_init/``: the student's starting weights (the fine-tuning job: the model's)."""

    kind: ClassVar[str] = "student init"

    teacher_params: int = 0
    student_params: int = 0
    teacher_hidden: int = 0
    student_architecture: str = ""
    student_shape: dict[str, Any] = field(default_factory=dict)
    vocab: dict[str, Any] = field(default_factory=dict)
    """``student.vocab: data``: the kept teacher ids (in the student's order) and how the
    trimmed tokenizer compares with the teacher's (:func:`xdistil_ray.student.vocab.trim`);
    empty: the teacher's vocabulary."""
    params: int = 0
    """The fine-tuning job: the model's parameters."""
    init: str = ""
    """The fine-tuning job: ``pretrained`` or ``random``."""


@dataclass
class StageMarker(Marker):
    """A training stage's folder (``stages/<k>-<name>/``, ``teacher_finetune/``,
    ``finetune/``): its model, its losses and how it trained."""

    kind: ClassVar[str] = "stage"

    name: str = ""
    losses: list[str] = field(default_factory=list)
    steps: int = 0
    planned_steps: int = 0
    first_loss: float = 0.0
    final_loss: float = 0.0
    steps_per_second: float | None = None
    resumed_from: list[int] = field(default_factory=list)
    seconds: float = 0.0
    targets: str = ""
    unfreeze: bool = False
    validation: dict[str, Any] | None = None
    nodes: list[Any] = field(default_factory=list)
    """Where the worker group ran: a Ray node id per rank."""
    checkpoint_bytes: list[int] = field(default_factory=list)
    """The bytes each rank wrote into the stage's last checkpoint (by rank)."""


# ------------------------------------------------------------------ outputs

@dataclass
class ModelMarker(Marker):
    """An exported model's folder (``student/``, the fine-tuning job's ``model/``)."""

    kind: ClassVar[str] = "model"

    params: int = 0
    candidate: str = ""
    """A sweep's ``student/``: the candidate it was copied from (empty otherwise)."""
    reason: str = ""
    """Why ``select`` chose that candidate."""
    met: bool = True
    """Whether the candidate meets ``select``'s rule (else it was the closest)."""


@dataclass
class EvalMarker(Marker):
    """``eval/``: the scores, the sizes and (distillation) the speeds."""

    kind: ClassVar[str] = "eval"

    eval: dict[str, Any] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] | None = None


@dataclass
class Started:
    """A resumable step's ``STARTED``: the fingerprint it started with."""

    fingerprint: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    kind: ClassVar[str] = "started"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ reading and writing

def dump(marker: Marker | Started) -> bytes:
    """The marker's JSON, as written to the run folder."""
    return json.dumps(marker.to_json(), indent=1, sort_keys=True).encode()


def load(data: bytes, kind: type[M], where: str) -> M | None:
    """The marker of ``kind`` in ``data`` (the file at ``where``, for messages); None when it
    does not parse or lacks a required field (a console line says which).

    Raises:
        MarkerVersionError: when a newer xdistil_ray wrote it.
    """
    raw = json_object(data, where)
    return None if raw is None else parse(raw, kind, where)


def json_object(data: bytes, where: str) -> dict | None:
    """The JSON object in ``data``, or None (with a console line) when it is none: a file
    cut short, empty or edited by hand counts as absent."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        log.info(f"{where} does not parse ({e}): treated as absent")
        return None
    if not isinstance(raw, dict):
        log.info(f"{where} is not a JSON object: treated as absent")
        return None
    return raw


def parse(raw: dict, kind: type[M], where: str) -> M | None:
    """:func:`load` for a JSON object already read."""
    version = raw.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise MarkerVersionError(
            f"{where}: a marker of version {version!r}, written by a newer xdistil_ray; this one "
            f"reads versions up to {VERSION}. Run the version that wrote it, or use a new "
            "output folder.")
    try:
        marker = _build(kind, {**raw, "version": VERSION})
    except (TypeError, ValueError, AttributeError) as e:
        log.info(f"{where} is not a {kind.kind} marker ({e}): treated as absent")
        return None
    return marker


def build(tp: type[T], value: Any) -> T:
    """``value`` (a step's figures as plain JSON-like values) as ``tp``: a marker's part."""
    return _build(tp, value)


def _build(tp: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as type ``tp``: dataclasses from objects, typed lists and dicts;
    a field the object lacks takes its default, one with no default is an error."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{tp.__name__}: an object expected, got {type(value).__name__}")
        hints = get_type_hints(tp)
        args = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                args[f.name] = _build(hints[f.name], value[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{tp.__name__} lacks {f.name!r}")
        return tp(**args)
    origin, params = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in params:
            return None
        return _build(next(p for p in params if p is not type(None)), value)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"a list expected, got {type(value).__name__}")
        return [_build(params[0], v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"an object expected, got {type(value).__name__}")
        return {k: _build(params[1], v) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{tp.__name__} expected, got {value!r}")
    return value
