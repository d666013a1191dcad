"""``--dry-run`` on a fresh run folder: the checks run, the plan is printed, nothing is written.
(Real runs: the finished tiny run in test_cluster_integration.py, the half-finished one in
test_resilience_integration.py.)"""

import subprocess
import sys

import pytest

from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config
from xdistil_ray.pipelines.dry_run import dry_run


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


def test_an_autoscaling_teacher_pool_is_planned_with_its_bounds(tmp_path):
    cfg = load_config(None, [f"output={tmp_path}/run", "teacher.inference.max_actors=6"])
    steps = {s.name: s for s in dry_run(cfg)}
    assert steps["teacher"].resources.startswith("Ray Data: 2-6 actor(s)")
    with pytest.raises(ConfigError, match="teacher.inference.max_actors"):
        load_config(None, ["teacher.inference.num_actors=4", "teacher.inference.max_actors=3"])


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


def test_a_teacher_of_an_unknown_family_is_refused_before_any_work(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    teacher = tmp_path / "gpt2"
    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100,
                                             num_labels=2)).save_pretrained(teacher)
    cfg = load_config(None, [f"output={tmp_path}/run", f"teacher.model={teacher}"])
    with pytest.raises(ConfigError, match=r"teacher.model: .* is a 'gpt2' model; .*supported: "
                                          r"bert, roberta, xlm-roberta"):
        dry_run(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, message", [
    (["student.architecture=gpt2"], "student.architecture: 'gpt2' is not one of bert, "),
    (["student.architecture=modernbert"], "differs from the teacher's 'bert'; init: teacher"),
])
def test_a_student_architecture_that_cannot_be_built_is_refused(tmp_path, overrides, message):
    cfg = load_config(None, [f"output={tmp_path}/run", *overrides])
    with pytest.raises(ConfigError, match=message):
        dry_run(cfg)
    cfg = load_config(None, [f"output={tmp_path}/run", "student.architecture=modernbert",
                             "student.init=random"])
    assert [s.state for s in dry_run(cfg)][3] == "to run"  # student_init


def test_cli_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, "jobs/distill.py", "--config", "jobs/configs/tiny.yaml",
                           "--dry-run", f"output={tmp_path}/run"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "dry run: config and storage checked" in proc.stdout
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()


def test_half_done_stage_resumes_from_its_own_checkpoint_in_the_shared_ray_run(tmp_path):
    """The stages share one Ray Train run (stages/ray): a stage's resume step comes from the
    whole checkpoints that name it, not from another stage's, nor from a partial one."""
    import json

    from xdistil_ray.distill.checkpoint import PROGRESS_FILE, RANK_MANIFEST
    from xdistil_ray.distill.checkpoint import newest_progress
    from xdistil_ray.run.runfolder import RunFolder

    def _checkpoint_step(run, rel):
        progress = newest_progress(run, "stages/ray", rel)
        return None if progress is None else progress["step"]

    run = RunFolder(str(tmp_path))
    checkpoints = [("checkpoint_0", "stages/1-representation", 40, 2),
                   ("checkpoint_1", "stages/2-logits", 10, 2),
                   ("checkpoint_2", "stages/2-logits", 20, 2),
                   ("checkpoint_3", "stages/2-logits", 30, 1)]  # rank 1's list missing
    for name, stage, step, ranks in checkpoints:
        base = f"stages/ray/{name}"
        run.write_json(f"{base}/{PROGRESS_FILE}", {"stage": stage, "step": step, "history": [],
                                                  "world_size": 2})
        for rank in range(ranks):
            run.write_bytes(f"{base}/{RANK_MANIFEST.format(rank=rank)}", json.dumps({}).encode())
    assert _checkpoint_step(run, "stages/2-logits") == 20
    assert _checkpoint_step(run, "stages/1-representation") == 40
    assert _checkpoint_step(run, "stages/3-labels") is None


def _labeled(tmp_path, train: list[dict], dev: list[dict], suffix: str = ".jsonl"):
    import json

    paths = {}
    for split, rows in (("train", train), ("dev", dev)):
        path = tmp_path / f"{split}{suffix}"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths[split] = str(path)
    return paths


_TRAIN = [{"text": f"review {i}", "label": ("good", "bad")[i % 2]} for i in range(20)]


@pytest.mark.parametrize("case, message", [
    ("unseen dev labels", r"labeled.dev: no row survived cleaning \(4 rows in .*unknown_label: 4"
                          r"\) \(every label is one the training split does not have\)"),
    ("empty dev file", r"labeled.dev: .* all empty"),
    ("label column missing", r"labeled.train: no row survived cleaning .*missing_label: 20.*"
                             r"columns read: text, label"),
    ("one class", r"labeled.train: needs at least 2 classes, found \['good'\]"),
    ("labels in a .txt", r"labeled.train: .* is plain text, which holds no labels"),
    ("corpus of empty files", r"corpus.path: .* its 2 file\(s\) are all empty"),
])
def test_bad_inputs_are_refused_by_the_dry_run_and_before_the_corpus_pass(tmp_path, case,
                                                                           message):
    """Each mistake stops ``--dry-run`` and the run itself with a message naming the field,
    before the corpus is read (these used to surface after the whole corpus pass, as an
    IndexError inside transformers, or inside Ray Data)."""
    from xdistil_ray.pipelines import distill as pipeline

    train, dev = list(_TRAIN), [{"text": f"new {i}", "label": "meh"} for i in range(4)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a sentence\nanother one\n")
    if case == "label column missing":
        train = [{"text": r["text"], "rating": r["label"]} for r in train]
    if case == "one class":
        train = [{**r, "label": "good"} for r in train]
    if case in ("label column missing", "one class"):
        dev = train[:4]
    paths = _labeled(tmp_path, train, dev)
    if case == "empty dev file":
        open(paths["dev"], "w").close()
    if case == "labels in a .txt":
        paths["train"] = str(tmp_path / "train.txt")
        (tmp_path / "train.txt").write_text("a review\n")
    if case == "corpus of empty files":
        corpus = tmp_path / "empty"
        corpus.mkdir()
        (corpus / "a.txt").write_text("")
        (corpus / "b.txt").write_text("")
    cfg = load_config("jobs/configs/tiny.yaml", [
        f"output={tmp_path}/run", f"corpus.path={corpus}", f"labeled.train={paths['train']}",
        f"labeled.dev={paths['dev']}"])
    with pytest.raises(ConfigError, match=message):
        dry_run(cfg)
    with pytest.raises(ConfigError, match=message):
        pipeline.run(cfg)  # the labeled splits are cleaned before the corpus is read
    assert not (tmp_path / "run" / "data" / "corpus").exists()
    import ray

    assert not ray.is_initialized(), "a refused input started Ray"


def test_the_dry_run_names_the_embedded_inputs_as_the_run_does(tmp_path):
    """The dry run writes nothing, so the embedded data it would generate is not there; its
    inputs' identity must still be the run's (a finished embedded default run was refused:
    "corpus.path (same path, other files: embedded then, None now)")."""
    from xdistil_ray.run import identity
    from xdistil_ray.pipelines import inputs as pipeline
    from xdistil_ray.run.runfolder import RunFolder

    for task, recipe in (("sentence", None), ("none", "jobs/configs/task_agnostic.yaml")):
        cfg = load_config(recipe, [f"output={tmp_path}/{task}", f"task={task}"])
        folder = RunFolder(cfg.output)
        planned = identity.of_inputs(cfg, pipeline.resolve_inputs(cfg, folder, generate=False))
        assert not (tmp_path / task).exists()
        ran = identity.of_inputs(cfg, pipeline.resolve_inputs(cfg, folder))
        assert planned == ran and "corpus.path.content" in planned


def test_the_dry_run_plans_the_student_and_eval_with_the_runs_fingerprints(tmp_path):
    """A finished run's export and eval markers carry the pipeline's fingerprints; the dry run
    compares against the same ones (it once left out the export fields, so a finished run's
    student and eval showed as 'to run (again: its inputs changed)')."""
    from xdistil_ray.evaluate.step import EvalStep
    from xdistil_ray.export.step import ExportStep
    from xdistil_ray.pipelines import distill as pipeline
    from xdistil_ray.run.runfolder import RunFolder

    cfg = load_config(None, [f"output={tmp_path}/run"])
    run = RunFolder(cfg.output)
    ctx = pipeline.context(cfg, run, dry=True)
    for step in (ExportStep(), EvalStep()):
        fp = step.fingerprint(ctx)
        run.write_json(f"{step.folder}/COMPLETE", {"fingerprint": fp, "files": {}})
        assert step.state(ctx) == "complete"
    assert "export.onnx" in EvalStep().fingerprint(ctx)
    changed = pipeline.context(load_config(None, [f"output={tmp_path}/run",
                                                  "export.onnx=false"]), run, dry=True)
    assert ExportStep().state(changed).startswith("to run (again")


@pytest.mark.parametrize("zero, workers, refused", [
    (2, 1, "split across 2 workers, which does not reshape to 1; resume it with "
           "train.num_workers=2"),
    (3, 4, "resume it with train.num_workers=2"),
    (0, 1, None), (0, 3, None), (2, 2, None)])
def test_a_half_done_stage_on_another_number_of_workers(tmp_path, zero, workers, refused):
    """A ZeRO-1-3 checkpoint's optimizer state is split across the ranks that wrote it: the
    run and its dry run refuse another train.num_workers before any work, naming it; a ZeRO-0
    one resumes on any number (tests/test_zero_ranks.py loads it across world sizes)."""
    import json

    from xdistil_ray.distill.checkpoint import (PROGRESS_FILE, RANK_MANIFEST,
                                                loads_deepspeed_state, refuse_unresumable)
    from xdistil_ray.run.runfolder import RunFolder

    run = RunFolder(str(tmp_path / "run"))
    base = "stages/ray/checkpoint_0"
    run.write_json(f"{base}/{PROGRESS_FILE}", {"stage": "stages/2-logits", "step": 20,
                                               "history": [], "world_size": 2,
                                               "zero_stage": zero})
    for rank in range(2):
        run.write_bytes(f"{base}/{RANK_MANIFEST.format(rank=rank)}", json.dumps({}).encode())
    cfg = load_config(None, [f"output={tmp_path}/run", f"train.num_workers={workers}",
                             f"train.zero_stage={zero}"])
    check = lambda: refuse_unresumable(  # noqa: E731
        run, "stages", ["stages/1-representation", "stages/2-logits"], workers, zero)
    progress = run.read_json(f"{base}/{PROGRESS_FILE}")
    assert loads_deepspeed_state(progress, workers, zero) is (refused is None)
    assert not loads_deepspeed_state({"world_size": 2}, 1, 0)  # older: full module, new optimizer
    if refused is None:
        check()
        dry_run(cfg)  # plans the resume
        return
    with pytest.raises(ConfigError, match=r"train.num_workers: stages/2-logits is half done; "
                                          r"its checkpoint at step 20 holds the ZeRO-\d "):
        check()
    with pytest.raises(ConfigError, match=refused):
        dry_run(cfg)
    other = load_config(None, [f"output={tmp_path}/run", "train.num_workers=2",
                               f"train.zero_stage={0 if zero else 2}"])
    with pytest.raises(ConfigError, match=f"written at ZeRO-{zero}; resume it with "
                                          f"train.zero_stage={zero}"):
        refuse_unresumable(run, "stages", ["stages/2-logits"], other.train.num_workers,
                           other.train.zero_stage)


def test_the_fine_tuning_job_plans_its_own_steps_fresh_half_done_and_changed(tmp_path, capsys,
                                                                             teacher_path):
    """``jobs/finetune.py --dry-run`` iterates the job's steps as its run does: a fresh folder
    plans all six and writes nothing; with the data committed and the stage started it says
    so; a changed field of the started stage is refused as the run would refuse it. (A
    finished job's dry run: tests/test_tasks_integration.py.)"""
    import json
    import pathlib

    from xdistil_ray.config import FinetuneJob
    from xdistil_ray.pipelines import finetune
    from xdistil_ray.run import markers
    from xdistil_ray.run.runfolder import RunFolder

    args = [f"output={tmp_path}/ft", f"model={teacher_path}"]
    cfg = load_config("jobs/configs/finetune.yaml", args, kind=FinetuneJob)
    steps = dry_run(cfg)
    assert [(s.name, s.state) for s in steps] == [
        (name, "to run") for name in ("data", "init", "finetune", "model", "eval", "report")]
    assert "6 step(s) would run" in capsys.readouterr().out
    assert not (tmp_path / "ft").exists()

    run = RunFolder(cfg.output)
    ctx = finetune.context(cfg, run, str(tmp_path), dry=True)
    old = json.loads((pathlib.Path(__file__).parent / "markers" / "ec4eb94" /
                      "finetune_data.json").read_text())
    data = markers.parse({**old, "files": {}}, markers.DataMarker, "data")
    data.fingerprint = finetune.LabeledDataStep().fingerprint(ctx)
    run.commit("data", data)
    run.start("finetune", finetune.FinetuneStageStep().fingerprint(ctx))
    steps = {s.name: s for s in dry_run(cfg)}
    assert steps["data"].state == "complete" and "train 2000 rows kept" in steps["data"].detail
    assert steps["init"].state == "to run" and steps["finetune"].state == "half done (resumes)"
    with pytest.raises(ConfigError, match=r"'finetune' is half done .* finetune.epochs"):
        dry_run(load_config("jobs/configs/finetune.yaml", args + ["finetune.epochs=9"],
                            kind=FinetuneJob))
