"""One driver per run folder: a lease (``<run>/LEASE``) taken before any work.

Two drivers on one ``output`` (a second ``ray job submit`` while the first job still runs on
the cluster, a re-run in another terminal) would delete and rewrite each other's shards and
train into the same checkpoints. The lease is a small JSON file created only if absent (an
``O_EXCL`` open on local disk, a ``PUT`` with ``If-None-Match: *`` on S3), renewed by a
heartbeat thread, and deleted when the driver ends. A second driver is refused at once with
the holder's host, pid and start time. A lease is taken over:

- when it expired (not renewed for :data:`EXPIRES_S`: its driver is gone);
- when its holder ran on this host and its process is gone (a killed laptop run);
- with ``--take-over``, once the user knows the holder is gone (a lost cluster head).

A driver whose lease was taken over stops at its next heartbeat: its main thread gets a
KeyboardInterrupt, raised by a handler for :data:`STOP_SIGNAL` that the heartbeat sends to it
(``_thread.interrupt_main`` alone does nothing where SIGINT is ignored, as it is for a driver
started in the background by a script: ``python jobs/distill.py &``), so two drivers never
write one folder for longer than a renewal period. The heartbeat never re-creates a lease that
is gone (a take-over between its delete and its create): it only rewrites its own.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

from xdistil_ray.run import layout
from xdistil_ray.run import storage
from xdistil_ray.errors import ConfigError
from xdistil_ray.run.runfolder import RunFolder

log = logging.getLogger(__name__)

LEASE = layout.LEASE
EXPIRES_S = 300.0
"""A lease not renewed for this long is free: its driver is gone. Longer than the storage
outages a driver rides out (a driver waiting on storage cannot renew)."""
RENEW_S = 30.0
TAKE_OVER_SETTLE_S = 1.0
"""After taking a lease over, how long a driver waits before it trusts it: a renewal by the
old holder that read the lease before the take-over would land within it."""
STOP_SIGNAL = signal.SIGUSR2
"""Sent by the heartbeat to the driver's main thread when the lease was taken over."""


def _stop_main(signum, frame) -> None:
    raise KeyboardInterrupt("the run folder's lease was taken over")


class LeaseHeld(ConfigError):
    """Another driver holds the run folder."""


def _describe(lease: dict, now: float) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lease.get("started", 0)))
    age = now - lease.get("renewed", 0)
    return (f"pid {lease.get('pid')} on host {lease.get('host')!r}, started {started}, "
            f"lease renewed {age:.0f} s ago")


def _process_gone(lease: dict) -> bool:
    """Whether ``lease``'s holder ran on this host and its process no longer exists."""
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return int(lease.get("pid", 0)) <= 0


class Lease:
    """The run folder's lease, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, run: RunFolder, expires_s: float = EXPIRES_S, renew_s: float = RENEW_S):
        self.run = run
        self.expires_s = expires_s
        self.renew_s = renew_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost_to: dict | None = None
        self._made_folder = False
        self._previous_handler = None
        self._main_ident = threading.main_thread().ident

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started, "renewed": time.time(),
                           "expires_s": self.expires_s}, indent=2).encode()

    def holder(self) -> dict | None:
        """The lease as written (None when there is none, or it does not parse)."""
        return self.run.read_object(LEASE)

    def acquire(self, take_over: bool = False) -> None:
        """Takes the lease or raises :class:`LeaseHeld`; starts the heartbeat."""
        self._made_folder = self.run.is_local and not self.run.exists("")
        took_over = False
        for _ in range(3):
            if self.run.create_exclusive(LEASE, self._body()) and self._ours():
                if took_over:  # a live holder's renewal in flight lands now, or never
                    time.sleep(TAKE_OVER_SETTLE_S)
                    if not self._ours():
                        continue
                self._start_heartbeat()
                return
            held = self.holder()
            now = time.time()
            if held is None:  # removed meanwhile, or unreadable: try again, then replace
                if self.run.exists(LEASE):
                    self.run.delete(LEASE)
                continue
            if held.get("token") == self.token:
                self._start_heartbeat()
                return
            why = ("--take-over" if take_over else
                   "it expired" if now - held.get("renewed", 0) > held.get("expires_s",
                                                                          self.expires_s)
                   else "its process is gone" if _process_gone(held) else None)
            if why is None:
                raise LeaseHeld(
                    f"{self.run.uri} is in use by another driver ({_describe(held, now)}). "
                    f"Two drivers on one output would overwrite each other's work. Wait for "
                    f"it to end (ray job status / ray job logs), stop it (ray job stop), or, "
                    f"once it is gone, run again with --take-over (a lease not renewed for "
                    f"{held.get('expires_s', self.expires_s):.0f} s is taken over by itself).")
            log.info(f"taking over the run folder's lease ({why}) from "
                     f"{_describe(held, now)}")
            self.run.delete(LEASE)
            took_over = True
        raise LeaseHeld(f"{self.run.uri}: another driver took the lease at the same moment; "
                        "run again once it ends")

    def _ours(self) -> bool:
        held = self.holder()
        return held is not None and held.get("token") == self.token

    def _start_heartbeat(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(STOP_SIGNAL, _stop_main)
        self._thread = threading.Thread(target=self._beat, name="xdistil-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        waiting = False
        while not self._stop.wait(self.renew_s):
            try:
                held = self.holder()
                if held is not None and held.get("token") != self.token:
                    self.lost_to = held
                    log.info(f"the run folder's lease was taken over by "
                             f"{_describe(held, time.time())}: this driver stops")
                    self._interrupt_main()
                    return
                if held is None:
                    # Gone or unreadable: another driver taking it over (between its delete and
                    # its create), or a user's rm. Never re-create it by a plain write, which
                    # would overwrite a new holder's; only where it is still absent (or still
                    # unreadable: a damaged file, not a new holder's).
                    if not self.run.create_exclusive(LEASE, self._body()) \
                            and self.holder() is None:
                        self.run.write_bytes(LEASE, self._body())
                else:
                    self.run.write_bytes(LEASE, self._body())
                if waiting:
                    log.info("lease renewed: storage answers again")
                waiting = False
            except OSError as e:
                if not waiting:
                    log.info(f"cannot renew the run folder's lease, waiting on storage "
                             f"({storage.first_line(e)})")
                waiting = True

    def _interrupt_main(self) -> None:
        if self._previous_handler is not None:  # ours is installed: a real signal (wakes sleeps)
            signal.pthread_kill(self._main_ident, STOP_SIGNAL)
        else:  # acquired off the main thread: Python's SIGINT, if the process handles it
            _thread.interrupt_main()

    def release(self) -> None:
        """Stops the heartbeat and deletes the lease if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._previous_handler is not None \
                and threading.current_thread() is threading.main_thread():
            signal.signal(STOP_SIGNAL, self._previous_handler)
            self._previous_handler = None
        if self.lost_to is None:
            try:
                if self._ours():
                    self.run.delete(LEASE)
                if self._made_folder and not self.run.list_files(""):
                    self.run.delete("")  # a run stopped before its first write leaves nothing
            except OSError:  # storage gone: the lease expires by itself
                pass

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(run: RunFolder, take_over: bool = False) -> Lease:
    """The run folder's lease, taken (use as a context manager)."""
    lease = Lease(run)
    lease.acquire(take_over)
    return lease
