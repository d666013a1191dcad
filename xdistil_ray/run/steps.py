"""The step contract and its runner.

A pipeline is one ordered list of :class:`Step` objects. The run (:meth:`Runner.run_all`), the
``--dry-run`` (:meth:`Runner.plan_all`) and the check for changed settings before any work
(:meth:`Runner.refuse_changes`) iterate that one list; there is no second list of steps.

The :class:`Runner` is the one place that skips a committed step (after checking its files
against its marker), refuses one whose settings changed since, writes a resumable step's
``STARTED`` marker, and runs a step again after a storage outage that outlasted the requests'
own retries. Steps hand what later steps read on through the run's :class:`Context`.
"""

from __future__ import annotations

import gc
import logging
import posixpath
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from xdistil_ray.errors import ConfigError
from xdistil_ray.run.identity import CONTENT
from xdistil_ray.run.markers import Marker
from xdistil_ray.run.runfolder import MARKER, RunFolder

log = logging.getLogger(__name__)

STORAGE_RETRIES = 3
"""Times a step runs again after a storage outage that outlasted the requests' retries."""


@dataclass
class Planned:
    """One line of ``--dry-run``: a step (or a training stage) and what a run would do with it."""

    name: str
    folder: str
    state: str
    """``complete``, ``half done (...)``, ``to run``, or ``not needed (...)``."""
    reads: list[str] = field(default_factory=list)
    resources: str = ""
    detail: str = ""

    @property
    def runs(self) -> bool:
        return not self.state.startswith(("complete", "not needed"))


def fingerprint(flat: dict, *sections: str, inputs: dict | None = None) -> dict:
    """The fields of the flattened config ``flat`` (``corpus.max_length``: 64) under
    ``sections``, with the identities of the inputs they name (``inputs``:
    ``corpus.path.content`` and the like)."""
    data = {**flat, **(inputs or {})}
    return {k: v for k, v in data.items() if any(k == s or k.startswith(s + ".") for s in sections)}


def changed_fields(old: dict, fp: dict, defaults: dict | None = None) -> list[str]:
    """The fields of fingerprint ``fp`` that differ from ``old`` (a marker's). A field ``old``
    does not name (added to the config since) counts as its default (``defaults``, flattened);
    an input's identity that it lacks (written before identities were recorded) is unknown, not
    changed; an input at another path is named once, as its path."""
    defaults = defaults or {}
    changed = {k for k in set(old) | set(fp)
               if old.get(k, defaults.get(k)) != fp.get(k)
               and not (k.endswith("." + CONTENT) and k not in old)}
    return sorted(k for k in changed
                  if not (k.endswith("." + CONTENT) and k[:-len(CONTENT) - 1] in changed))


def refuse_changed(run: RunFolder, rel: str, old: dict, fp: dict, state: str = "complete",
                   defaults: dict | None = None) -> None:
    """Raises ConfigError naming the fields that changed since ``rel`` was committed (or
    started) with fingerprint ``old``. A field the marker does not name counts as its default:
    a run folder of an older version resumes while the new field keeps its default."""
    changed = changed_fields(old, fp, defaults)
    if changed:
        raise ConfigError(
            f"{run.uri}: step {rel!r} is {state} but these fields changed since: "
            f"{', '.join(_named(k, old, fp) for k in changed)}. Use a new output folder, or "
            "restore the old values.")


def _named(key: str, old: dict, new: dict) -> str:
    """A changed field as the message names it; an input's content with both identities."""
    if key.endswith("." + CONTENT):
        return (f"{key[:-len(CONTENT) - 1]} (same path, other files: {old.get(key)} then, "
                f"{new.get(key)} now)")
    return key


class Context:
    """What the steps of one run share: its config, run folder and runner, and what each step
    hands on to the later ones (a pipeline's subclass names those fields). ``dry``: a
    ``--dry-run``, where nothing runs and steps hand on what is committed."""

    def __init__(self, cfg: Any, run: RunFolder, runner: "Runner", flat: dict, dry: bool = False):
        self.cfg, self.run, self.runner, self.flat, self.dry = cfg, run, runner, flat, dry
        self.prefix = ""
        """The folder a sweep's candidate writes its steps under (``candidates/<name>``); empty
        for a run's one student."""

    def fingerprint(self, *sections: str) -> dict:
        """The config fields under ``sections`` with the inputs' identities."""
        return fingerprint(self.flat, *sections, inputs=self.runner.inputs)

    def start_ray(self) -> None:
        """Connects to Ray (a pipeline's context knows how); a dry run starts nothing."""


class Step:
    """One step of a pipeline: its name (what the console and ``--dry-run`` say), its folder
    in the run folder, the config fields its fingerprint covers, what ``--dry-run`` prints
    (:meth:`plan`) and its work (:meth:`run`, which commits its folder and returns the marker).

    A ``resumable`` step keeps what an earlier attempt committed (and is checked against its
    ``STARTED`` marker); a ``derived`` one (measurements nothing else builds on) runs again when
    its fields changed instead of refusing; a step without ``announce`` prints its own start and
    end; one not ``committed`` (the report) has no marker and runs every time.
    """

    name = ""
    folder = ""
    keys: tuple[str, ...] = ()
    marker_kind: type[Marker] = Marker
    """The kind of its ``COMPLETE`` marker (:mod:`xdistil_ray.run.markers`)."""
    resumable = False
    derived = False
    announce = True
    committed = True

    def fingerprint(self, ctx: Context) -> dict:
        return ctx.fingerprint(*self.keys)

    def where(self, ctx: Context) -> str:
        """The step's folder in the run folder: ``folder``, under a candidate's prefix."""
        return posixpath.join(ctx.prefix, self.folder)

    def parts(self, ctx: Context) -> list[tuple[str, dict]]:
        """The folders this step commits, each with its fingerprint."""
        return [(self.where(ctx), self.fingerprint(ctx))] if self.committed else []

    def not_needed(self, ctx: Context) -> str | None:
        """Why this run does not need the step (it is then skipped), or None."""
        return None

    def check_resumable(self, ctx: Context) -> None:
        """Refuses, before any work, a half-done step that cannot resume as configured."""

    def plan(self, ctx: Context) -> list[Planned]:
        """What ``--dry-run`` prints of the step (a pipeline with a dry run implements it)."""
        raise NotImplementedError

    def run(self, ctx: Context, fp: dict) -> Any:
        raise NotImplementedError

    def use(self, ctx: Context, marker: Any) -> None:
        """Hands the step's marker (None when not needed) on to the later steps."""

    def committed_marker(self, ctx: Context) -> Any:
        """What the run folder holds of this step (the dry run hands it on), or None."""
        if not self.committed or self.not_needed(ctx):
            return None
        return ctx.run.marker(self.where(ctx), self.marker_kind)

    def state(self, ctx: Context) -> str:
        """The step's state as ``--dry-run`` prints it."""
        return ctx.runner.state(self.where(ctx), self.fingerprint(ctx) if self.derived else None,
                                self.marker_kind)


class StepGroup(Step):
    """Steps that run together (the training stages, on one Ray Train worker group): the runner
    skips the committed ones up to the first that is not, and :meth:`run_pending` runs the
    rest in one go."""

    def parts(self, ctx: Context) -> list[tuple[str, dict]]:
        raise NotImplementedError

    def run_pending(self, ctx: Context, pending: list[tuple[int, str, dict]]) -> list[dict]:
        """Runs ``pending`` ((index among the parts, folder, fingerprint), in order); returns
        their markers."""
        raise NotImplementedError

    def committed_marker(self, ctx: Context) -> list:
        return [ctx.run.marker(rel, self.marker_kind) for rel, _ in self.parts(ctx)]


class Runner:
    """Runs steps in order against one run folder, skipping and checking committed ones."""

    def __init__(self, run: RunFolder, inputs: dict | None = None, defaults: dict | None = None,
                 after_step: Callable[[], None] | None = None):
        self.run = run
        self.inputs = inputs or {}
        """The inputs' identities (``identity.of_inputs``), part of every fingerprint."""
        self.defaults = defaults or {}
        """The flattened default config: a field a marker does not name counts as its default."""
        self.after_step = after_step or (lambda: None)

    # ------------------------------------------------------------------ a pipeline's steps

    def run_all(self, steps: list[Step], ctx: Context) -> None:
        for step in steps:
            self.execute(step, ctx)

    def plan_all(self, steps: list[Step], ctx: Context) -> list[Planned]:
        """What a run would do, step by step; each step hands on what is committed of it."""
        out: list[Planned] = []
        for step in steps:
            out += step.plan(ctx)
            step.use(ctx, step.committed_marker(ctx))
        return out

    def refuse_changes(self, steps: list[Step], ctx: Context) -> None:
        """One ConfigError naming every committed or started folder of ``steps`` whose fields
        changed (derived steps run again instead)."""
        self.refuse_changed_folders([part for step in steps if not step.derived
                                     for part in step.parts(ctx)])

    def refuse_changed_folders(self, checks: list[tuple[str, dict]]) -> None:
        problems = []
        for rel, fp in checks:
            try:
                self.check(rel, fp)
            except ConfigError as e:
                problems.append(str(e).split(": ", 1)[1])
        if problems:
            raise ConfigError(f"{self.run.uri}: " + "; ".join(problems))

    def execute(self, step: Step, ctx: Context) -> Any:
        """Runs ``step`` unless committed (or not needed) and hands its marker on."""
        if step.not_needed(ctx):
            step.use(ctx, None)
            return None
        if isinstance(step, StepGroup):
            marker = self._ensure_group(step, ctx)
        elif not step.committed:
            marker = step.run(ctx, {})
        else:
            marker = self.ensure(step.where(ctx), step.fingerprint(ctx),
                                 lambda fp: step.run(ctx, fp), resumable=step.resumable,
                                 derived=step.derived, announce=step.announce,
                                 kind=step.marker_kind)
        step.use(ctx, marker)
        return marker

    def _ensure_group(self, group: StepGroup, ctx: Context) -> list[Marker]:
        markers, pending = [], []
        for k, (rel, fp) in enumerate(group.parts(ctx)):
            marker = self.check(rel, fp, group.marker_kind)
            if marker is not None and not pending:
                marker = self.verified(rel, marker)
            if marker is not None and not pending:
                log.info(f"{rel}: complete, skipped")
                markers.append(marker)
            else:
                pending.append((k, rel, fp))
        if pending:
            group.check_resumable(ctx)
            markers += group.run_pending(ctx, pending)
            self.after_step()
        return markers

    # ------------------------------------------------------------------ one folder

    def state(self, rel: str, derived_fp: dict | None = None,
              kind: type[Marker] = Marker) -> str:
        """``complete``, ``half done (resumes)`` or ``to run``; a derived step (given its
        fingerprint) is to run again when what it derives from changed."""
        marker = self.run.marker(rel, kind)
        if derived_fp is not None:
            if marker is None:
                return "to run"
            return ("to run (again: its inputs changed)"
                    if changed_fields(marker.fingerprint, derived_fp, self.defaults)
                    else "complete")
        if marker is not None:
            return "complete"
        if self.run.started(rel) is not None:
            return "half done (resumes)"
        return "to run"

    def check(self, rel: str, fp: dict, kind: type[Marker] = Marker) -> Marker | None:
        """Refuses a changed config for ``rel`` (complete, or started and resumable); returns
        its marker (as ``kind``) when complete."""
        marker = self.run.marker(rel, kind)
        if marker is not None:
            refuse_changed(self.run, rel, marker.fingerprint, fp, defaults=self.defaults)
            return marker
        started = self.run.started(rel)
        if started is not None:
            refuse_changed(self.run, rel, started.fingerprint, fp, "half done (it resumes)",
                           self.defaults)
        return None

    def verified(self, rel: str, marker: Marker | None) -> Marker | None:
        """``marker`` when the files it names are all there with their sizes; else None, after
        a console line per bad file and the marker's removal: the step runs again from its
        inputs (its outputs are a function of them) instead of failing in every reader."""
        if marker is None:
            return None
        problems = self.run.verify(rel, marker)
        if not problems:
            return marker
        for line in problems:
            log.info(f"{rel}: {line}")
        log.info(f"{rel}: its files differ from its {MARKER} marker: running it again")
        self.run.delete(rel, MARKER)
        return None

    def ensure(self, rel: str, fp: dict, run_step: Callable[[dict], Any],
               resumable: bool = False, derived: bool = False, announce: bool = True,
               kind: type[Marker] = Marker) -> Any:
        """The marker of folder ``rel`` (as ``kind``): its committed one, or ``run_step(fp)``'s
        after running (see :class:`Step` for ``resumable``, ``derived`` and ``announce``)."""
        marker = self.verified(rel, self.run.marker(rel, kind) if derived
                               else self.check(rel, fp, kind))
        if marker is not None and derived and changed_fields(marker.fingerprint, fp,
                                                             self.defaults):
            log.info(f"{rel}: settings changed, measuring again")
            marker = None
        if marker is not None:
            log.info(f"{rel}: complete, skipped")
            return marker
        if resumable and self.run.started(rel) is None:
            self.run.start(rel, fp)
        started = time.time()
        if announce:
            log.info(f"{rel}: running")
        marker = run_through_outages(self.run, rel, fp, run_step)
        if announce:
            log.info(f"{rel}: done in {time.time() - started:.0f}s")
        self.after_step()
        return marker


def run_through_outages(run: RunFolder, rel: str, fp: dict, run_step: Callable[[dict], dict],
                        wait_s: float | None = None) -> dict:
    """``run_step(fp)``; after a storage error (an outage longer than the requests' own
    retries), a console line, a wait until the store answers (up to
    ``storage.OUTAGE_WAIT_S``), and the step again: a resumable step keeps what it committed
    (teacher shards, checkpoints), the others start over. Up to :data:`STORAGE_RETRIES`
    times."""
    from xdistil_ray.run import storage

    for attempt in range(STORAGE_RETRIES + 1):
        try:
            return run_step(fp)
        except Exception as e:  # noqa: BLE001 - only storage errors are retried
            if attempt == STORAGE_RETRIES or not storage.is_storage_error(e):
                raise
            why = storage.first_line(e)
        # The failed attempt's Ray Data operators hold their actors (the teacher's pool, with
        # its CPUs and GPUs) in reference cycles through the error's traceback: collected, the
        # actors exit. Otherwise they outlive the step, and on a small cluster the next
        # attempt or stage waits forever for what they hold (seen: a 0.5-CPU teacher actor
        # left a 2-CPU machine's stage 1 waiting on a 1-CPU read task).
        release_failed_pass()
        log.info(f"{rel}: waiting on storage ({why}); the step resumes once it answers")
        waited = storage.wait_until_reachable(
            run.uri, run.options, storage.OUTAGE_WAIT_S if wait_s is None else wait_s)
        log.info(f"{rel}: storage answers again after {waited:.0f} s: resuming the step")
    raise AssertionError("unreachable")


def release_failed_pass(timeout_s: float = 10.0) -> int:
    """Ends what a failed Ray Data pass left running, and returns how many actors it killed.

    Steps run one at a time, so after a failed step no pass of this driver should run on:

    1. every Ray Data executor still reachable is shut down with ``force`` (its operators kill
       their actors; a pool left running would start a new actor for each one killed);
    2. once the executors' threads (``StreamingExecutor-*``) have ended (up to ``timeout_s``),
       the reference cycles that hold their operators are collected;
    3. any Ray Data map worker (``_MapWorker``) whose handle this driver still holds is killed.

    Collection alone (2 without 1 and 3) was not enough: in a CI run (2026-12-07, slow hour) a
    failed pass's pool actor was still alive 15 s after it. The teacher's pool holding its CPU
    (or GPU) leaves the next attempt or stage of a small cluster waiting forever for it."""
    import ray
    from ray.actor import ActorHandle
    # Ray Data's executor is internal; its shutdown(force=True) is what a failed pass's own
    # error path would call to kill its actors at once.
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    gc.collect()
    for obj in gc.get_objects():
        if isinstance(obj, StreamingExecutor):
            obj.shutdown(force=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(
            t.name.startswith("StreamingExecutor-") and t.is_alive()
            for t in threading.enumerate()):
        time.sleep(0.2)
    gc.collect()
    if not ray.is_initialized():
        return 0
    killed = set()
    for obj in gc.get_objects():
        if (isinstance(obj, ActorHandle) and obj._ray_actor_id not in killed
                and obj._ray_actor_creation_function_descriptor.class_name == "_MapWorker"):
            try:
                ray.kill(obj, no_restart=True)
            except Exception:  # noqa: BLE001 - an actor that already exited
                continue
            killed.add(obj._ray_actor_id)
    if killed:
        log.debug("killed %d map worker(s) a failed pass left", len(killed))
    return len(killed)
