"""``--dry-run`` on a fresh run folder: the checks run, the plan is printed, nothing is written.
(The half-finished case runs against a real run in test_pipeline_integration.py.)"""

import subprocess
import sys

import pytest

from xdistil_ray.config import ConfigError, load_config
from xdistil_ray.dry_run import dry_run


def test_fresh_embedded_run_plans_every_step_and_writes_nothing(tmp_path, capsys):
    cfg = load_config(None, [f"output={tmp_path}/run"])
    steps = dry_run(cfg)
    out = capsys.readouterr().out
    assert [s.name for s in steps] == [
        "data", "teacher_finetune", "teacher", "student_init", "stage 1: representation",
        "stage 2: logits", "stage 3: labels", "student", "eval", "report"]
    assert all(s.state == "to run" for s in steps)
    assert "10 step(s) would run" in out
    assert f"writes:    {tmp_path}/run/stages/2-logits" in out
    assert 'Ray Data: 2 actor(s) x {"CPU": 0.5}, batch 128' in out
    assert 'Ray Train: 1 worker(s) x {"CPU": 1.0}, DeepSpeed ZeRO-0' in out
    assert not (tmp_path / "run").exists()


def test_task_agnostic_plan_skips_what_it_does_not_need(tmp_path):
    cfg = load_config("jobs/configs/task_agnostic.yaml", [f"output={tmp_path}/run"])
    steps = {s.name: s for s in dry_run(cfg)}
    assert steps["teacher_finetune"].state.startswith("not needed")
    assert steps["teacher"].state.startswith("not needed")
    assert "online" in " ".join(steps["stage 1: mha-hs"].reads)


def test_teacher_with_head_needs_no_finetune(tmp_path, teacher_with_head):
    cfg = load_config(None, [f"output={tmp_path}/run", f"teacher.model={teacher_with_head}"])
    steps = {s.name: s for s in dry_run(cfg)}
    assert steps["teacher_finetune"].state.startswith("not needed")
    assert "teacher_finetune" not in " ".join(steps["teacher"].reads)


def test_bad_input_fails_the_dry_run_like_the_run(tmp_path):
    cfg = load_config(None, [f"output={tmp_path}/run", f"corpus.path={tmp_path}/nope.txt"])
    with pytest.raises(ConfigError, match="corpus.path"):
        dry_run(cfg)


def test_cli_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, "jobs/distill.py", "--config", "jobs/configs/tiny.yaml",
                           "--dry-run", f"output={tmp_path}/run"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "dry run: config and storage checked" in proc.stdout
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()
