"""TensorBoard event files in the run folder, ``<run>/tensorboard/``, on local disk and on S3.

Each training stage (and the teacher's fine-tune) writes ``tensorboard/<its folder>/``
(``1-representation``, ``teacher_finetune``...) from rank 0 while it trains: its total loss,
each loss's value, the learning rate, the gradient norm and steps per second at every logged
step, and its dev score after each epoch where it validates. The events are written to a local folder and copied to
the run folder at every checkpoint and at the stage's end, so a run on S3 can be watched from
any machine (``tensorboard --logdir s3://bucket/run/tensorboard`` with the bucket's endpoint in
``S3_ENDPOINT``, or a synced copy). A resumed stage adds an event file beside the earlier
ones. The report step writes ``tensorboard/report/``: teacher inference's rows per second and the
run's final figures as hparams (the run's settings beside its results).

tensorboardX ships with ``ray[train]``; TensorBoard itself is not a dependency (install it to
view the files).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import time

from xdistil_ray.run import layout
from xdistil_ray.run.runfolder import RunFolder

FOLDER = layout.TENSORBOARD


class StageLog:
    """One stage's event file: written locally (synchronously: a sync copies whole records),
    copied into ``<run>/tensorboard/<name>/``."""

    def __init__(self, run: RunFolder, name: str, workdir: str | None = None):
        """``name``: the stage's folder in the run (its last part names the log);
        ``workdir``: where the local file goes (a temporary folder by default)."""
        from tensorboardX.event_file_writer import EventsWriter

        self.run = run
        self.rel = posixpath.join(FOLDER, posixpath.basename(name.rstrip("/")))
        self.local = tempfile.mkdtemp(prefix="xdistil-tb-", dir=workdir)
        # A resumed stage's file beside the earlier attempts': its own time, host and pid
        self.writer = EventsWriter(os.path.join(self.local, "events"),
                                   filename_suffix=f".{os.getpid()}")
        self._last: tuple[int, float] | None = None

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """``values`` at ``step`` (None values are skipped); steps/s from the previous call."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        now = time.time()
        if self._last is not None and step > self._last[0]:
            values = {**values, "steps_per_second": (step - self._last[0]) / (now - self._last[1])}
        self._last = (step, now)
        for tag, value in values.items():
            if value is not None:
                self.writer.write_event(Event(wall_time=now, step=step,
                                              summary=scalar(tag, float(value))))

    def sync(self) -> None:
        """Copies the events written so far into the run folder."""
        self.writer.flush()
        for name in os.listdir(self.local):
            with open(os.path.join(self.local, name), "rb") as f:
                self.run.write_bytes(posixpath.join(self.rel, name), f.read())

    def close(self) -> None:
        self.sync()
        self.writer.close()
        shutil.rmtree(self.local, ignore_errors=True)


def write_report(run: RunFolder, report: dict, settings: dict) -> None:
    """``tensorboard/report/``: teacher inference's rows/s, and ``settings`` (flat config
    fields) as hparams with the report's final figures as their metrics."""
    from tensorboardX import SummaryWriter

    local = tempfile.mkdtemp(prefix="xdistil-tb-")
    try:
        writer = SummaryWriter(local)
        ti = report.get("teacher_inference")
        if ti and ti.get("seconds"):
            writer.add_scalar("teacher/rows_per_second", ti["rows"] / ti["seconds"], 0)
        writer.add_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                            for k, v in settings.items()},
                           final_figures(report), name="final", global_step=0)
        writer.close()  # drains its queue: every event is in the files
        run.upload(local, posixpath.join(FOLDER, "report"))
    finally:
        shutil.rmtree(local, ignore_errors=True)


def final_figures(report: dict) -> dict[str, float]:
    """The report's headline numbers, as ``hparam/<name>`` metrics."""
    figures = {f"hparam/{k}": v for k, v in (report.get("eval") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    cpu = (report.get("speed") or {}).get("cpu") or {}
    for key in ("speedup_latency", "speedup_throughput"):
        if key in cpu:
            figures[f"hparam/cpu_{key}"] = cpu[key]
    size = report.get("size") or {}
    if "compression" in size:
        figures["hparam/compression"] = size["compression"]
    return figures
