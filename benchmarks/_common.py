"""What the benchmarks share: the machine line, generated sentences, teachers, phases run in
fresh processes (so that each measures its own start-up and peak memory), and rates."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def machine() -> str:
    """One line: CPU model and count, GPU when present, torch and ray versions."""
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} CPUs, {gpu}; torch {torch.__version__}, ray {ray.__version__}, "
            f"Python {platform.python_version()}")


def write_sentences(path: str, count: int, seed: int = 0) -> str:
    """``count`` generated review sentences, one per line (the embedded default's generator;
    a few repeat, as in crawled text)."""
    from xdistil_ray.data.embedded_reviews import review

    if os.path.exists(path):
        return path
    rng = random.Random(seed)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for _ in range(count):
            f.write(review(rng, rng.random() < 0.5) + "\n")
    os.replace(tmp, path)
    return path


def teacher_with_head(folder: str, num_labels: int = 2) -> str:
    """all-MiniLM-L6-v2 (the embedded teacher) with an untrained classification head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from xdistil_ray.modeling.models import load_tokenizer, resolve_teacher_path

    if not os.path.exists(os.path.join(folder, "config.json")):
        path = resolve_teacher_path("embedded")
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
        model.save_pretrained(folder)
        load_tokenizer(path).save_pretrained(folder)
    return folder


def random_bert(folder: str, *, layers: int, hidden: int, heads: int, intermediate: int,
                num_labels: int = 2, task: str = "sentence") -> str:
    """A random BERT of this shape with the embedded teacher's vocabulary and tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    from xdistil_ray.modeling.models import load_tokenizer, resolve_teacher_path

    if not os.path.exists(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate,
                            num_labels=num_labels)
        cls = BertForTokenClassification if task == "token" else BertForSequenceClassification
        cls(config).save_pretrained(folder)
        load_tokenizer(resolve_teacher_path("embedded")).save_pretrained(folder)
    return folder


def _phase_env() -> dict:
    """A phase process's environment: this one's, with the project and benchmarks/ put ahead of
    the caller's own PYTHONPATH (kept: packages installed with --target live there)."""
    path = os.pathsep.join(p for p in (ROOT, HERE, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "RAY_DEDUP_LOGS": "0"}


def run_phase(script: str, phase: str, args: dict, timeout_s: int = 3600) -> dict:
    """Runs ``script --phase PHASE --args JSON`` in a fresh Python process; returns the JSON
    object it prints on its last line. Its output goes to this console as it comes."""
    env = _phase_env()
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        proc = subprocess.run([sys.executable, script, "--phase", phase, "--args", json.dumps(args),
                               "--result", result.name], env=env, timeout=timeout_s, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"phase {phase} failed with exit code {proc.returncode}")
        return json.load(open(result.name))


def start_phase(script: str, phase: str, args: dict) -> subprocess.Popen:
    """:func:`run_phase` started in its own session (so that the benchmark can kill it with
    everything it started: ``os.killpg``); its result is not read."""
    return subprocess.Popen([sys.executable, script, "--phase", phase, "--args", json.dumps(args),
                             "--result", os.devnull], env=_phase_env(), cwd=ROOT,
                            start_new_session=True)


def run_phases(script: str, phase: str, args_list: list[dict], timeout_s: int = 3600) -> list[dict]:
    """:func:`run_phase` for each of ``args_list`` at once (parallel fresh processes)."""
    env = _phase_env()
    procs = []
    for args in args_list:
        result = tempfile.NamedTemporaryFile("r", suffix=".json")
        procs.append((result, subprocess.Popen(
            [sys.executable, script, "--phase", phase, "--args", json.dumps(args),
             "--result", result.name], env=env, cwd=ROOT)))
    out = []
    for result, proc in procs:
        if proc.wait(timeout=timeout_s) != 0:
            raise SystemExit(f"phase {phase} failed with exit code {proc.returncode}")
        out.append(json.load(open(result.name)))
        result.close()
    return out


def phase_main(phases: dict) -> bool:
    """In a phase process: runs the phase named on the command line and writes its result.
    Returns False when this process is the benchmark's parent (no ``--phase``)."""
    if "--phase" not in sys.argv:
        return False
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--phase")
    parser.add_argument("--args")
    parser.add_argument("--result")
    ns = parser.parse_args()
    result = phases[ns.phase](**json.loads(ns.args))
    with open(ns.result, "w") as f:
        json.dump(result, f)
    return True


def steady_rate(points: list[tuple[float, int]], low: float = 0.1, high: float = 0.9) -> float:
    """Rows per second between the moments ``low`` and ``high`` of all rows were done, from
    (time, cumulative rows) points: the steady state, without start-up and the tail."""
    points = sorted(points)
    total = points[-1][1]

    def when(fraction: float) -> tuple[float, int]:
        return next((t, n) for t, n in points if n >= fraction * total)

    (t0, n0), (t1, n1) = when(low), when(high)
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config(**overrides):
    """The project's config with ``key=value`` overrides (dotted keys)."""
    from xdistil_ray.config import load_config

    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def start_ray(num_cpus: int = 0) -> None:
    """Local Ray as the pipeline starts it."""
    from xdistil_ray.pipelines.ray_start import init_ray

    init_ray(config(**{"ray.num_cpus": num_cpus or os.cpu_count()}))


def data_marker(run_dir: str):
    """The data step's marker of the run folder ``run_dir``."""
    from xdistil_ray.run.markers import DataMarker
    from xdistil_ray.run.runfolder import RunFolder

    return RunFolder(run_dir).marker("data", DataMarker)


def prepare(run_dir: str, corpus_path: str, tokenizer_path: str, cfg):
    """The pipeline's data step over ``corpus_path`` into the run folder ``run_dir``."""
    from xdistil_ray.data.readers import resolve_source
    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.data import step as prepare_step

    c = cfg.corpus
    settings = prepare_step.TextSettings(tokenizer_path, c.max_length, c.max_chars,
                                         c.heldout_fraction)
    return prepare_step.run_step(RunFolder(run_dir),
                                 resolve_source(corpus_path, "corpus.path", split=c.hf_split),
                                 {}, settings, text_column=c.text_column, label_column="label",
                                 labeled_text_column="text",
                                 rows_per_shard=c.rows_per_shard, fingerprint={})


def teacher_pass(run_dir: str, data_marker, teacher: str, cfg,
                 outputs=("logits", "hidden"), task: str = "sentence"):
    """The pipeline's teacher inference step with ``cfg.teacher.inference``."""
    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.teacher import step as teacher_inference

    inf = cfg.teacher.inference
    return teacher_inference.run_step(
        RunFolder(run_dir), data_marker, model_path=teacher, model_in_run=False, outputs=outputs,
        batch_size=inf.batch_size, num_actors=inf.num_actors, num_gpus=inf.num_gpus_per_actor,
        num_cpus=inf.num_cpus_per_actor, fingerprint={}, task=task,
        group_batches=inf.group_batches, dtype=inf.dtype, top_k=inf.top_k)
