"""The driver's console: the project's own lines for the person watching, the rest in logs.

A job (``jobs/distill.py``) runs inside :func:`capture`. Its console (and so ``ray job logs``)
then shows only ``[xdistil]`` lines: steps starting, skipped and done, progress, warnings a user
must act on, the summary. Everything else goes to log files that end up in ``<run>/logs/``:

- ``driver-<start>.log``: the driver's Python output (Ray, Ray Data, DeepSpeed, transformers,
  warnings) and whatever its native code and child processes write to its stdout and stderr;
- ``workers-<start>.log``: every Ray worker's and actor's output on every node, which Ray
  streams to the driver, each line prefixed with its process.

``--verbose`` shows everything on the console as well. On a terminal, progress lines (those
with a rate: ``rows/s``, ``steps/s``) of one label overwrite each other as one live line.

The capture is process-wide (file descriptors 1 and 2, ``sys.stdout``/``sys.stderr``), so the
state here is a module-level singleton; without :func:`capture` (tests calling the pipeline in
process, benchmarks) every function here is a no-op and output goes where it always went.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from typing import Iterator

PREFIX = "[xdistil]"
_PROGRESS = re.compile(r"\d (rows|steps)/s\b")
_LABEL = re.compile(r"^\[xdistil\] ([^:]+):")


def is_project_line(line: str) -> bool:
    return line.startswith(PREFIX)


class LineHandler(logging.Handler):
    """The package's log records as console lines: ``[xdistil] <message>`` (``[xdistil] warning:
    <message>`` at WARNING and above), written to this process's stdout as it is when the record
    comes: the console's capture in a job's driver, the output Ray forwards to the driver in a
    worker, pytest's capture in a test."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"warning: {text}"
            sys.stdout.write(f"{PREFIX} {text}\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


def show(text: str) -> None:
    """Lines built whole (``[xdistil] label: ...``, one or several) as records of the package's
    logger: the same lines again on the console, through :class:`LineHandler`."""
    for line in text.splitlines():
        message = line.removeprefix(PREFIX).lstrip()
        if message.startswith("warning: "):
            logging.getLogger("xdistil_ray").warning(message.removeprefix("warning: "))
        else:
            logging.getLogger("xdistil_ray").info(message)


def install_line_handler() -> None:
    """Shows the ``xdistil_ray`` loggers' records (INFO and above) as console lines, in every
    process that imports the package (``xdistil_ray/__init__.py``): the driver and each Ray
    worker. Code that imports the package quiets them as any library's logs:
    ``logging.getLogger("xdistil_ray").setLevel(logging.WARNING)``, or removes the handler."""
    logger = logging.getLogger("xdistil_ray")
    if not any(isinstance(h, LineHandler) for h in logger.handlers):
        logger.addHandler(LineHandler())
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        logger.propagate = False  # not twice where the root logger has a handler too


class Console:
    """Shows lines on the real console and keeps every line in the logs.

    Args:
        out: the real console (a text stream).
        err: the real stderr, for failures.
        driver_log, workers_log: text streams of the two logs.
        verbose: show every line, not only the project's.
        live: a terminal: a label's progress lines overwrite each other.
    """

    def __init__(self, out, driver_log, workers_log, *, verbose: bool, live: bool, err=None):
        self.out, self.driver_log, self.workers_log = out, driver_log, workers_log
        self.err = err or out
        self.verbose, self.live = verbose, live
        self.live_label: str | None = None
        self.lock = threading.Lock()
        self.num_shown = 0

    def driver_line(self, line: str) -> None:
        with self.lock:
            self.driver_log.write(line + "\n")
            if self.verbose or is_project_line(line):
                self._show(line)

    def worker_lines(self, data: dict) -> None:
        """A Ray log batch (``{"pid", "ip", "actor_name"/"task_name", "lines", "is_err"}``, as
        Ray's log monitor publishes it) from any worker of the cluster."""
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}, ip={data.get('ip')})".replace("( ", "(")
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its status every few seconds: the events only
            from ray._private.worker import filter_autoscaler_events

            lines = list(filter_autoscaler_events(lines))
        with self.lock:
            for line in lines:
                self.workers_log.write(f"{prefix} {line}\n")
                if is_project_line(line):
                    self._show(line)
                elif self.verbose:
                    self._show(f"{prefix} {line}")
            self.workers_log.flush()

    def error(self, text: str) -> None:
        """Shown whatever the filter: a failure the user must see (a traceback, a bad config)."""
        with self.lock:
            self.driver_log.write(text.rstrip("\n") + "\n")
            self._end_live()
            self.out.flush()
            self.err.write(text.rstrip("\n") + "\n")
            self.err.flush()

    def _show(self, line: str) -> None:
        match = _LABEL.match(line)
        if self.live and match and _PROGRESS.search(line):
            if self.live_label not in (None, match.group(1)):
                self.out.write("\n")
            self.out.write("\r\x1b[K" + line)
            self.live_label = match.group(1)
        else:
            self._end_live()
            self.out.write(line + "\n")
            self.num_shown += 1
        self.out.flush()

    def _end_live(self) -> None:
        if self.live_label is not None:
            self.out.write("\n")
            self.num_shown += 1
            self.live_label = None

    def flush(self) -> None:
        with self.lock:
            self.driver_log.flush()
            self.workers_log.flush()


class _LineStream(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` of the driver: whole lines to the :class:`Console`."""

    def __init__(self, console: Console, fileno: int):
        self.console, self._fileno, self.buffer_text = console, fileno, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer_text += text.replace("\r\n", "\n")
        *lines, self.buffer_text = self.buffer_text.split("\n")
        for line in lines:
            # A carriage return redraws a line (progress bars): keep what it ends with.
            self.console.driver_line(line.rsplit("\r", 1)[-1])
        return len(text)

    def flush(self) -> None:
        self.console.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fileno

    @property
    def encoding(self) -> str:
        return "utf-8"


class _Session:
    """The active capture: the console, the logs' local files, and the run folder they are
    copied to."""

    def __init__(self, console: Console, paths: dict[str, str], stamp: str):
        self.console, self.paths, self.stamp = console, paths, stamp
        self.run = None

    def sync(self) -> None:
        if self.run is None:
            return
        self.console.flush()
        for kind, path in self.paths.items():
            with open(path, "rb") as f:
                self.run.write_bytes(f"logs/{kind}-{self.stamp}.log", f.read())


_session: _Session | None = None


@contextlib.contextmanager
def capture(verbose: bool = False) -> Iterator[Console]:
    """Routes the process's output as the module docstring says, until the block ends."""
    global _session
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = tempfile.mkdtemp(prefix="xdistil-logs-")
    paths = {kind: os.path.join(folder, f"{kind}.log") for kind in ("driver", "workers")}
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    driver_log = open(paths["driver"], "a", buffering=1, encoding="utf-8", errors="replace")
    workers_log = open(paths["workers"], "a", encoding="utf-8", errors="replace")
    out = open(os.dup(saved_fds[0]), "w", encoding="utf-8", errors="replace")
    err = open(os.dup(saved_fds[1]), "w", encoding="utf-8", errors="replace")
    console = Console(out, driver_log, workers_log, verbose=verbose, err=err,
                      live=os.isatty(saved_fds[0]) and os.environ.get("TERM") != "dumb")
    if not verbose:  # native code and child processes (Ray's own) write to the driver's log
        os.dup2(driver_log.fileno(), 1)
        os.dup2(driver_log.fileno(), 2)
    sys.stdout = _LineStream(console, driver_log.fileno())
    sys.stderr = _LineStream(console, driver_log.fileno())
    _session = _Session(console, paths, stamp)
    try:
        yield console
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _LineStream) and stream.buffer_text:
                stream.write("\n")
        try:
            _session.sync()
        except Exception as e:  # noqa: BLE001 - the run's result matters more than its logs
            console.error(f"{PREFIX} warning: could not copy the logs to the run folder: {e}")
        _session = None
        _release_worker_output()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        console.flush()
        console._end_live()
        out.close()
        err.close()
        driver_log.close()
        workers_log.close()
        shutil.rmtree(folder, ignore_errors=True)  # copied to the run folder when it had one


def attach_run(run) -> None:
    """Copies the logs into ``run`` (a :class:`~xdistil_ray.run.runfolder.RunFolder`) from now on,
    at :func:`sync_logs` and at the end."""
    if _session is not None:
        _session.run = run
        print(f"{PREFIX} logs: {run.uri_of('logs')}/ (driver-{_session.stamp}.log, "
              f"workers-{_session.stamp}.log)", flush=True)


def sync_logs() -> None:
    """Copies the logs so far into the run folder (after each step: an S3 run keeps them)."""
    if _session is not None:
        try:
            _session.sync()
        except Exception as e:  # noqa: BLE001
            print(f"{PREFIX} warning: could not copy the logs to the run folder: {e}", flush=True)


def route_worker_output() -> None:
    """After ``ray.init``: Ray's stream of every worker's output goes to the console's filter
    instead of being printed (Ray's own handler, ``ray_print_logs``, is replaced)."""
    if _session is None:
        return
    from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("xdistil_console", _session.console.worker_lines)


def _release_worker_output() -> None:
    if "ray" not in sys.modules:
        return
    from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

    dispatcher.remove_handler("xdistil_console")


def quiet_ray_data() -> None:
    """Ray Data's progress bars off unless verbose (they go to the log as redrawn lines)."""
    if _session is None or _session.console.verbose:
        return
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
