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

A driver whose lease was taken over stops at its next heartbeat (its main thread gets a
KeyboardInterrupt), so two drivers never write one folder for longer than a renewal period.
"""

from __future__ import annotations

import _thread
import json
import os
import socket
import threading
import time
import uuid

from xdistil_ray.errors import ConfigError
from xdistil_ray.runfolder import RunFolder

LEASE = "LEASE"
EXPIRES_S = 300.0
"""A lease not renewed for this long is free: its driver is gone. Longer than the storage
outages a driver rides out (a driver waiting on storage cannot renew)."""
RENEW_S = 30.0


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

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started, "renewed": time.time(),
                           "expires_s": self.expires_s}, indent=2).encode()

    def holder(self) -> dict | None:
        """The lease as written (None when there is none, or it does not parse)."""
        return self.run.read_marker(LEASE)

    def acquire(self, take_over: bool = False) -> None:
        """Takes the lease or raises :class:`LeaseHeld`; starts the heartbeat."""
        self._made_folder = self.run.is_local and not self.run.exists("")
        for _ in range(3):
            if self.run.create_exclusive(LEASE, self._body()) and self._ours():
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
            print(f"[xdistil] taking over the run folder's lease ({why}) from "
                  f"{_describe(held, now)}", flush=True)
            self.run.delete(LEASE)
        raise LeaseHeld(f"{self.run.uri}: another driver took the lease at the same moment; "
                        "run again once it ends")

    def _ours(self) -> bool:
        held = self.holder()
        return held is not None and held.get("token") == self.token

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="xdistil-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        waiting = False
        while not self._stop.wait(self.renew_s):
            try:
                held = self.holder()
                if held is not None and held.get("token") != self.token:
                    self.lost_to = held
                    print(f"[xdistil] the run folder's lease was taken over by "
                          f"{_describe(held, time.time())}: this driver stops", flush=True)
                    _thread.interrupt_main()
                    return
                self.run.write_bytes(LEASE, self._body())
                if waiting:
                    print("[xdistil] lease renewed: storage answers again", flush=True)
                waiting = False
            except OSError as e:
                if not waiting:
                    print(f"[xdistil] cannot renew the run folder's lease, waiting on storage "
                          f"({str(e).splitlines()[0][:200]})", flush=True)
                waiting = True

    def release(self) -> None:
        """Stops the heartbeat and deletes the lease if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
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
