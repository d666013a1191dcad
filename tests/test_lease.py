"""One driver per run folder (xdistil_ray/lease.py), on local disk and on a real S3 server."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from xdistil_ray.lease import LEASE, Lease, LeaseHeld
from xdistil_ray.runfolder import RunFolder
from xdistil_ray.storage import StorageOptions

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


def test_a_driver_whose_lease_was_taken_over_stops(run, capsys):
    holder = Lease(run, renew_s=0.2)
    holder.acquire()
    Lease(run).acquire(take_over=True)  # the user's --take-over from another driver
    with pytest.raises(KeyboardInterrupt):
        time.sleep(10)  # the heartbeat interrupts the main thread
    assert holder.lost_to is not None
    assert "lease was taken over" in capsys.readouterr().out
    holder.release()
    assert run.exists(LEASE)  # the new holder's lease stays


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
