"""One driver per run folder (xdistil_ray/run/lease.py), on local disk and on a real S3 server."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from xdistil_ray.run.lease import LEASE, STOP_SIGNAL, Lease, LeaseHeld
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.storage import StorageOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def run(request, tmp_path):
    if request.param == "local":
        return RunFolder(str(tmp_path / "run"))
    s3 = request.getfixturevalue("s3")
    return RunFolder(f"s3://runs/lease-{uuid.uuid4().hex[:8]}", StorageOptions(endpoint=s3.endpoint))


def test_a_second_driver_is_refused_at_once_and_told_who_holds_it(run):
    first = Lease(run)
    first.acquire()
    try:
        start = time.time()
        with pytest.raises(LeaseHeld) as e:
            Lease(run).acquire()
        assert time.time() - start < 5
        message = str(e.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()!r}" in message
        assert "started 20" in message and "--take-over" in message
    finally:
        first.release()
    assert not run.exists(LEASE)  # released
    with Lease(run) as again:
        again.acquire()
        assert again.holder()["token"] == again.token


def test_only_one_of_two_racing_creates_wins(run):
    """The lease is created only if absent (O_EXCL; S3 If-None-Match: *)."""
    assert run.create_exclusive("x/LOCK", b"a") is True
    assert run.create_exclusive("x/LOCK", b"b") is False
    assert run.read_bytes("x/LOCK") == b"a"


def _write_lease(run, **fields):
    lease = {"token": "other", "host": "elsewhere", "pid": 1, "started": time.time() - 60,
             "renewed": time.time(), "expires_s": 300.0, **fields}
    run.write_bytes(LEASE, json.dumps(lease).encode())


def test_a_lease_is_taken_over_when_expired_its_process_gone_or_told(run, capsys):
    _write_lease(run, renewed=time.time() - 301)  # not renewed for longer than it lasts
    lease = Lease(run)
    lease.acquire()
    lease.release()
    assert "taking over the run folder's lease (it expired)" in capsys.readouterr().out
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid on this host that no longer runs
    _write_lease(run, host=socket.gethostname(), pid=dead.pid)
    lease = Lease(run)
    lease.acquire()
    lease.release()
    assert "(its process is gone)" in capsys.readouterr().out
    _write_lease(run)  # live, on another host: only --take-over
    with pytest.raises(LeaseHeld):
        Lease(run).acquire()
    lease = Lease(run)
    lease.acquire(take_over=True)
    assert lease.holder()["token"] == lease.token
    lease.release()


@pytest.mark.parametrize("sigint", ["handled", "ignored"])
def test_a_driver_whose_lease_was_taken_over_stops(run, capsys, sigint):
    """``ignored``: SIGINT as a driver started in the background by a script has it (``cmd &``
    in a non-interactive shell), where ``_thread.interrupt_main`` alone does nothing."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN if sigint == "ignored"
                           else signal.default_int_handler)
    try:
        holder = Lease(run, renew_s=0.2)
        holder.acquire()
        taker = Lease(run)  # the user's --take-over from another driver (here: a thread)
        taking = threading.Thread(target=taker.acquire, kwargs={"take_over": True})
        start = time.time()
        with pytest.raises(KeyboardInterrupt):
            taking.start()
            time.sleep(10)  # the heartbeat interrupts the main thread
        taking.join()
        assert time.time() - start < 5  # woken, not at the sleep's end
        assert holder.lost_to is not None
        assert "lease was taken over" in capsys.readouterr().out
        holder.release()
        assert taker.holder()["token"] == taker.token  # the new holder's lease stays
        taker.release()
    finally:
        signal.signal(signal.SIGINT, before)
    assert signal.getsignal(STOP_SIGNAL) is signal.SIG_DFL  # the handler is restored


def test_a_renewal_never_writes_over_a_new_holders_lease(run, monkeypatch):
    """A take-over deletes the old lease, then creates its own: the old holder's heartbeat,
    whose read landed between the two (it saw no lease), must not write its lease back over
    the new one."""
    holder = Lease(run, renew_s=0.1)
    reads = []

    def holder_read(real=holder.holder):
        reads.append(1)
        return None if len(reads) == 1 else real()  # the first beat's read: in the gap

    monkeypatch.setattr(holder, "holder", holder_read)
    monkeypatch.setattr(holder, "_interrupt_main", lambda: None)
    holder.acquire()
    _write_lease(run)  # the new holder's lease, created before the beat's write
    time.sleep(0.5)
    assert json.loads(run.read_bytes(LEASE))["token"] == "other"
    assert holder.lost_to is not None  # a later beat saw it and stopped
    holder.release()
    assert json.loads(run.read_bytes(LEASE))["token"] == "other"


def test_the_lease_is_renewed(run):
    lease = Lease(run, renew_s=0.2)
    lease.acquire()
    first = lease.holder()["renewed"]
    time.sleep(1.0)
    assert lease.holder()["renewed"] > first
    lease.release()


def test_distill_refuses_a_folder_another_driver_holds(tmp_path):
    """As a user meets it: the second ``jobs/distill.py`` on an output in use stops in seconds
    with status 2 and one line, before any step."""
    run = RunFolder(str(tmp_path / "run"))
    _write_lease(run, host=socket.gethostname(), pid=os.getpid())  # this test: alive
    start = time.time()
    proc = subprocess.run([sys.executable, "jobs/distill.py", "--config", "jobs/configs/tiny.yaml",
                           f"output={run.uri}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "is in use by another driver" in proc.stderr and "Traceback" not in proc.stderr
    assert time.time() - start < 60
    assert sorted(os.listdir(run.uri)) == [LEASE]  # nothing written
