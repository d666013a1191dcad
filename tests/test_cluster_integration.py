"""The cluster path on this machine, every listener on loopback.

- a real Ray cluster (`ray start --head`, plus a second node) runs the pipeline through
  `ray job submit --working-dir .`, with its run folder in S3 (SeaweedFS); the same submission
  again finds everything complete;
- Ray's autoscaling test cluster, on node types shaped like cluster/aws.yaml's and starting from
  zero workers, adds the node types the steps ask for, and the run completes.

Both start and stop Ray machine-wide (`ray stop --force`), so this module runs before any test
that uses the session's local Ray (file order), and refuses to run after one.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from s3server import free_port

from xdistil_ray.embedded_data import write_embedded_data
from xdistil_ray.runfolder import RunFolder
from xdistil_ray.storage import StorageOptions

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CONFIG = "tests/configs/cluster_tiny.yaml"
STEPS = ("data", "teacher", "student_init", "stages/1-logits", "student", "eval")


def _env(**extra) -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PYTHONUNBUFFERED="1", **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def _ray_stop(env):
    subprocess.run([f"{BIN}/ray", "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def no_local_ray():
    import ray

    assert not ray.is_initialized(), (
        "the cluster tests stop every Ray process on the machine; run them before (or without) "
        "the tests that share the session's local Ray")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_embedded_data(str(tmp_path_factory.mktemp("cluster_inputs")), seed=2,
                               num_train=128, num_dev=64, num_corpus=400)


def _listeners_off_loopback() -> list[str]:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:]
            if "ray" in line or "gcs_server" in line or "raylet" in line
            if not line.split()[3].rsplit(":", 1)[0] in (
                "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]")]


@pytest.fixture(scope="module")
def loopback_cluster(no_local_ray):
    """A head (1 CPU, the dashboard and job API on loopback, token authentication) and a
    second node (2 CPUs) joined to it."""
    env = _env(RAY_AUTH_TOKEN=secrets.token_hex(32))  # every node and client reads it
    gcs, dashboard = free_port(), free_port()
    node_dir = tempfile.mkdtemp(prefix="xr-", dir="/tmp")  # short: Unix socket paths
    _ray_stop(env)
    try:
        subprocess.run([f"{BIN}/ray", "start", "--head", f"--port={gcs}",
                        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dashboard}", "--num-cpus=1",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True,
                       timeout=120)
        # Its own temp dir: nodes sharing one unpack the job's working_dir over each other
        # (Ray re-extracts it per node), pulling the driver's working directory from under it.
        subprocess.run([sys.executable, "tests/cluster/ray_loopback.py", "start",
                        f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=2", f"--dashboard-agent-listen-port={free_port()}",
                        f"--temp-dir={node_dir}"],
                       cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        _ray_stop(env)
        shutil.rmtree(node_dir, ignore_errors=True)


def _submit(env, address: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"{BIN}/ray", "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "jobs/distill.py", "--config", CONFIG, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _essentials(done: subprocess.CompletedProcess) -> str:
    """The lines of a job's output that say what happened (Ray Data's progress bars drown it)."""
    keep = ("[xdistil]", "Error", "error:", "Traceback", "  File ", "Job '", "raise ")
    text = done.stdout + done.stderr
    return "\n".join(line[:300] for line in text.splitlines() if any(k in line for k in keep))


def _job_console(submit_output: str) -> list[str]:
    """The driver's own lines in ``ray job submit``'s stdout: after the CLI's "Tailing logs until
    the job exits" and the job supervisor's lines, without the CLI's closing rules and "Job
    '...' succeeded" (colours stripped)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in submit_output.splitlines()]
    # The job's log opens with Ray's job supervisor ("Runtime env is setting up.", "Running
    # entrypoint for job ..."); the driver's console starts after its last line.
    start = max((i for i, line in enumerate(lines)
                 if "Tailing logs until the job exits" in line
                 or line.startswith("Running entrypoint for job")), default=-1)
    # The CLI's own closing lines ("---", "Job '...' succeeded", "---") come through its logger:
    # "[<date> <time>\t]SUCC cli.py:66 -- ..." (timestamped when its output is not a terminal).
    cli = re.compile(r"(\d{4}-\d\d-\d\d [\d:,]+\s+)?(SUCC|INFO|WARNING|ERROR)\s+cli\.py:\d+ -- ")
    return [line for line in lines[start + 1:]
            if line and not re.fullmatch(r"-+", line) and not cli.match(line)
            and not re.match(r"Job '\S+' (succeeded|failed|stopped)", line)]


def test_job_submit_runs_the_pipeline_and_resubmission_resumes(loopback_cluster, s3, inputs,
                                                               teacher_with_head):
    env, address = loopback_cluster
    nodes = subprocess.run([f"{BIN}/ray", "list", "nodes", "--address", address, "--format",
                            "json"], env=env, capture_output=True, text=True, timeout=60)
    assert len([n for n in json.loads(nodes.stdout) if n["state"] == "ALIVE"]) == 2, nodes.stderr
    assert _listeners_off_loopback() == []
    uri = "s3://runs/cluster-job"
    args = [f"output={uri}", f"storage.endpoint={s3.endpoint}",
            f"corpus.path={inputs['corpus']}", f"labeled.train={inputs['train']}",
            f"labeled.dev={inputs['dev']}", f"teacher.model={teacher_with_head}"]
    first = _submit(env, address, args)
    assert first.returncode == 0 and "succeeded" in first.stdout + first.stderr, _essentials(first)
    # Progress and the closing summary reach the job's logs (what `ray job logs` shows).
    logs = first.stdout
    assert re.search(r"\[xdistil\] data: corpus read and cleaned: [\d,]+ rows, [\d,]+ rows/s",
                     logs), _essentials(first)
    assert re.search(r"\[xdistil\] teacher: [\d,]+/[\d,]+ \(100%\) rows, [\d,]+ rows/s", logs)
    steps = re.findall(r"\[xdistil\] (\w+): step (\d+)/(\d+), loss [\d.]+, [\d.]+ steps/s, "
                       r"elapsed \d+s, ~\d+s left", logs)
    assert steps and len(steps) == len(set(steps)), steps  # each progress line once
    # The job's console holds the project's lines only (Ray's, Ray Data's, DeepSpeed's and the
    # workers' output is in <run>/logs/): step start/skip/done, progress, the summary.
    console = _job_console(logs)
    assert console and [line for line in console if not line.startswith("[xdistil] ")] == [], (
        console)
    assert len(console) <= 40, console
    assert f"[xdistil] student: {uri}/student" in logs
    assert f"[xdistil] report:  {uri}/report.md" in logs
    run = RunFolder(uri, StorageOptions(endpoint=s3.endpoint))
    assert all(run.is_complete(step) for step in STEPS)
    assert run.exists("report.json") and run.exists("config.yaml")
    workers_log = [n for n in run.list_files("logs") if n.startswith("workers-")]
    assert len(workers_log) == 1
    assert "RayTrainWorker" in run.read_bytes(f"logs/{workers_log[0]}").decode()
    start = time.time()
    second = _submit(env, address, args)
    assert second.returncode == 0, _essentials(second)
    assert time.time() - start < 60
    for step in STEPS:
        assert f"[xdistil] {step}: complete, skipped" in second.stdout


def test_autoscaler_adds_the_node_types_the_steps_ask_for(no_local_ray, inputs, teacher_with_head,
                                                         tmp_path):
    env = _env()
    done = subprocess.run(
        [sys.executable, "tests/cluster/autoscale_run.py", CONFIG, f"output={tmp_path}/run",
         f"corpus.path={inputs['corpus']}", f"labeled.train={inputs['train']}",
         f"labeled.dev={inputs['dev']}", f"teacher.model={teacher_with_head}",
         "teacher.inference.num_gpus_per_actor=1", "teacher.inference.resources={teacher_gpu: 1}",
         "train.resources_per_worker={train_gpu: 1}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith('{"added"')]
    result = json.loads(line)
    # The head has no CPU for work: CPU nodes for the data step, teacher GPU nodes for the
    # teacher actors, training nodes for the Ray Train workers.
    assert {"cpu_node", "teacher_gpu", "train_gpu"} <= set(result["added"]), result
    run = RunFolder(f"{tmp_path}/run")
    assert all(run.is_complete(step) for step in STEPS)
