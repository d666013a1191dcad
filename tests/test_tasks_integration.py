"""Every task shape end to end on CPU: real Ray, the real teacher, real files.

Token classification (NER-style), sentence pairs (MNLI-style) and task-agnostic distillation of
a plain encoder (MHA + HS, online targets), each on the tiny config with small embedded data.
Sentence pairs also run end to end in the resilience scenario
(tests/test_resilience_integration.py, with kills and resumes), sentences in
the cluster job (tests/test_cluster_integration.py), teachers of the other families in
tests/test_families_integration.py.
"""

import json
import math
import os

import pytest

from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config
from xdistil_ray.data.embedded_data import write_embedded_data

pytestmark = pytest.mark.integration

_STAGE_BASE = {"batch_size": 32, "learning_rate": 2.0e-3}
"""32 rows a step on the one worker: the global batch of tiny.yaml's 2 workers x 16."""

ONE_WORKER = ["train.num_workers=1", "train.torch_threads=2", "train.cpus_per_worker=1",
              "teacher.finetune.batch_size=32"]
"""These runs test task shapes, not several ranks (two-worker ZeRO runs in the cluster job,
the resilience scenario and tests/test_train_loop.py): one training worker with both cores'
threads, at the global batch tiny.yaml's two workers of 16 rows make. Measured 2026-12-07 on
the token run: 113 s -> 86 s (one worker, no ONNX), teacher / student entity F1 the same."""


def _run(root, task: str, stages: list[dict], extra: list[str] = (),
         num_corpus: int = 640, num_train: int = 256, num_dev: int = 64, onnx: bool = False,
         seed: int = 3):
    """A run of tiny.yaml on one training worker, on the embedded data of ``task`` (data seed
    ``seed``); ONNX export and its int8 timing only where a test reads them (every family's
    export is checked in tests/test_onnx.py)."""
    from xdistil_ray.pipelines import distill as pipeline

    data = write_embedded_data(str(root / "inputs"), seed=seed, num_train=num_train,
                               num_dev=num_dev, num_corpus=num_corpus,
                               task="sentence" if task == "none" else task)
    overrides = [*ONE_WORKER, f"export.onnx={str(onnx).lower()}", f"output={root}/run",
                 f"task={task}", f"corpus.path={data['corpus']}",
                 f"labeled.train={data['train'] if task != 'none' else ''}",
                 f"labeled.dev={data['dev'] if task != 'none' else ''}",
                 "stages=" + json.dumps([{**_STAGE_BASE, **s} for s in stages]), *extra]
    cfg = load_config("jobs/configs/tiny.yaml", overrides)
    return pipeline.run(cfg)


def _losses_fell(report):
    for stage in report["stages"]:
        assert stage["steps"] > 0
        assert stage["final_loss"] < stage["first_loss"], stage


@pytest.fixture(scope="module")
def token_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("token")
    # The logits stage without gradual unfreezing and over 4 epochs: with it, over 2 (a few
    # steps per phase), the student kept 0.80 of the teacher's entity F1 (seed 3).
    report = _run(root, "token", [
        {"name": "representation", "losses": [{"type": "representation"}], "epochs": 2},
        {"name": "logits", "losses": [{"type": "logits"}], "epochs": 4}])
    return root, report


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, ray_local):
    """The embedded sentence pairs (a review, a claim: entailment when the claim's polarity
    matches the review's; the claim's wording alone scores 75%, the review's nothing). The
    teacher needs 2,000 pairs at batch 32; tiny.yaml's student (2 x 64) stayed at the majority
    before the claim's cue (2026-12-01) and keeps 81% / 88.5% / 80% of a 100% teacher with it
    (run seeds 0 / 1 / 2, these stages at 2e-3, 2026-12-04: short of 0.9); 2 blocks of the
    teacher's width (384, init from the teacher's blocks) at 5e-4 keep all of the teacher's
    accuracy.

    Since 2026-12-07 (one worker on both cores' threads; the transfer set the 1,000 corpus
    pairs alone, not the 2,000 labeled ones too; 2 fine-tune epochs; 6 logits epochs of 1,000
    pairs: 170 steps where 338 of 3,000 were): run seeds 0 / 1 / 2, teacher 99.5 / 98.0 /
    100%, student 96.0 / 96.0 / 95.5% (ratio 0.965 / 0.980 / 0.955), agreement 95.8 / 89.5 /
    91.6%, int8 = fp32 at each; 268 / 265 / 262 s, where the recipe before took 507 s on the
    same machine (seed 0: teacher and student 100%). 1,000 training pairs instead of 2,000
    (3 fine-tune epochs) left the teacher at 80.0, 86.5, 88.5% (seed 0): short of the 0.9
    bound, so the labeled size stays.

    Before, measured 2026-12-04 (data seed 3, run seeds 0 / 1 / 2, `/tmp` replicas of this
    fixture, the transfer set with the labeled pairs, 3 fine-tune and 4 logits epochs):
    - teacher dev accuracy by epoch 96, 99.5, 100 / 80, 100 / 86, 100 (the last two
      stopped at a perfect score);
    - student 100% / 97.5% / 100%, agreement 100% / 96.5% / 100%; logits MSE 9.58 -> 0.008 /
      6.04 -> 0.36 / 7.34 -> 0.008.
    Before the cue (pairs an XOR of the two sentences) the same recipe was a lottery: run seed
    1's teacher ended at 72%; seed 2's teacher reached 100% and its student never left the
    majority (logits MSE 5.43 -> 5.44, 52.5%); CI's run at seed 0 kept 75.5% (2026-12-03)."""
    root = tmp_path_factory.mktemp("pair")
    report = _run(root, "pair", PAIR_STAGES, extra=PAIR_EXTRA, num_corpus=1000, num_train=2000,
                  num_dev=200, onnx=True)
    return root, report


PAIR_STAGES = [
    {"name": "representation", "losses": [{"type": "representation"}], "epochs": 1,
     "batch_size": 32, "learning_rate": 5.0e-4},
    {"name": "logits", "losses": [{"type": "logits"}], "epochs": 6, "batch_size": 32,
     "learning_rate": 5.0e-4}]
PAIR_CANDIDATES = [
    {"name": "wide"},
    {"name": "narrow", "student": {"hidden_size": 64, "num_heads": 2, "intermediate_size": 128},
     "learning_rate_scale": 4.0}]
"""The pair run is a sweep of two students from its one teacher pass: 2 blocks of the teacher's
width (384, the run's ``student``) and tiny.yaml's 2 x 64 at tiny.yaml's learning rate (2e-3)."""
PAIR_EXTRA = ["corpus.with_labeled=false", "corpus.max_length=64", "teacher.finetune.epochs=2",
              "student.hidden_size=384", "student.num_heads=12", "student.intermediate_size=1536",
              "candidates=" + json.dumps(PAIR_CANDIDATES), "select.rule=smallest",
              "select.min_retained=0.9"]


def test_pair_run_keeps_the_teachers_accuracy(pair_run):
    """What the product promises for sentence pairs: a teacher that learned the task and a
    student that keeps at least 0.9 of its dev accuracy."""
    _, report = pair_run
    assert report["task"] == "pair" and report["teacher"]["finetuned"] is True
    assert report["data"]["label_names"] == ["contradiction", "entailment"]
    e = report["eval"]
    rows = {r["name"]: r for r in report["candidates"]["rows"]}
    # Measured 2026-12-07 over run seeds 0 / 1 / 2 (the fixture's docstring): teacher 99.5 /
    # 98.0 / 100%, student ratio 0.965 / 0.980 / 0.955; as this sweep (the same day, seeds
    # 0 / 1 / 2): teacher 99.5 / 100 / 100%, the wide student's ratio 0.950 / 0.960 / 0.970:
    # the 0.9 ratio has 0.05 of room under the lowest of the six.
    assert e["teacher_accuracy"] >= 0.9, e
    assert rows["wide"]["retained"] >= 0.9, rows
    assert e["student_accuracy"] >= 0.9 * e["teacher_accuracy"], e  # the exported one
    # The narrow student (2 x 64, 2.1M parameters, 7.6x fewer than the wide one's 15.6M; its
    # stages at 2e-3) keeps less: 0.779 / 0.780 / 0.745 of the teacher (agreement 77.9 / 76.8 /
    # 73.7%), the same sweeps. Its floor, 0.65, is 0.095 under the lowest (a dev pair is 0.5
    # points); well above the majority class's 0.5.
    assert rows["narrow"]["retained"] >= 0.65, rows
    assert rows["narrow"]["latency_ms"] < rows["wide"]["latency_ms"], rows
    _losses_fell(report)


def test_the_pair_sweep_exports_the_candidate_its_rule_picks(pair_run):
    """Two students from one teacher pass, each in its own folder; the rule (the smallest that
    keeps 90% of the teacher's accuracy) picks one, copied as student/ with its card saying
    why; a candidate added to the finished sweep is the only one that would train."""
    from xdistil_ray.config import SelectConfig
    from xdistil_ray.pipelines.dry_run import dry_run
    from xdistil_ray.report import selection
    from xdistil_ray.run.markers import EvalMarker, ModelMarker
    from xdistil_ray.run.runfolder import RunFolder

    root, report = pair_run
    sweep = report["candidates"]
    rows = [selection.Figures(**r) for r in sweep["rows"]]
    assert [r.name for r in rows] == ["wide", "narrow"]
    expected = selection.choose(rows, SelectConfig(rule="smallest", min_retained=0.9))
    assert (sweep["chosen"], sweep["met"], sweep["reason"]) == (
        expected.name, expected.met, expected.reason)
    assert sweep["front"] == selection.pareto_front(rows) and sweep["chosen"] in sweep["front"]
    narrow, wide = rows[1], rows[0]
    assert narrow.params < wide.params / 5 and narrow.shape == "L2-H64"
    run = RunFolder(str(root / "run"))
    chosen = run.marker("student", ModelMarker)
    assert chosen.candidate == sweep["chosen"]
    assert run.read_bytes("student/model.safetensors") == run.read_bytes(
        f"candidates/{sweep['chosen']}/student/model.safetensors")
    assert report["eval"] == run.marker(f"candidates/{sweep['chosen']}/eval", EvalMarker).eval
    for name in ("wide", "narrow"):
        for step in ("student_init", "stages/1-representation", "stages/2-logits", "student",
                     "eval"):
            assert run.is_complete(f"candidates/{name}/{step}"), (name, step)
    assert not run.exists("stages") and not run.exists("eval")  # only the candidates' own
    md = run.read_bytes("report.md").decode()
    assert "## Candidates" in md and f"**{sweep['chosen']}**" in md
    assert run.read_bytes("candidates.png")[:4] == b"\x89PNG"
    card = run.read_bytes("student/README.md").decode()
    assert "## Why this student" in card and sweep["reason"] in card
    # The same sweep again: nothing but the report; one candidate more: only its steps.
    cfg = load_config(str(root / "run" / "config.yaml"))
    assert [s.name for s in dry_run(cfg) if s.runs] == ["report"]
    three = PAIR_CANDIDATES + [{"name": "deeper", "student": {
        "num_layers": 3, "hidden_size": 64, "num_heads": 2, "intermediate_size": 128}}]
    cfg = load_config(str(root / "run" / "config.yaml"), ["candidates=" + json.dumps(three)])
    assert [s.name for s in dry_run(cfg) if s.runs] == [
        "deeper: student_init", "deeper: stage 1: representation", "deeper: stage 2: logits",
        "deeper: student", "deeper: eval", "student (chosen)", "report"]


def test_the_int8_onnx_student_scores_what_the_fp32_one_does(pair_run):
    """The int8 ONNX copy's dev accuracy and agreement beside the fp32 student's. Measured
    2026-12-03 on the resilience scenario's pair run (64 dev rows): int8 59.4% = fp32 59.4%;
    tests/test_onnx.py's tiny models differ by 1-2% of their logits' spread. The margin, 3
    points, is two dev rows of 64."""
    _, report = pair_run
    e, onnx = report["eval"], report["speed"]["cpu"]["onnx"]
    assert abs(e["int8_accuracy"] - e["student_accuracy"]) <= 0.03, e
    assert e["int8_agreement"] >= e["agreement"] - 0.03, e
    assert onnx["int8"]["disk_bytes"] < 0.5 * onnx["fp32"]["disk_bytes"], onnx
    assert onnx["fp32"]["latency_ms"] > 0 and onnx["int8"]["throughput"] > 0


def test_token_classification_run(token_run):
    root, report = token_run
    assert report["task"] == "token" and report["teacher"]["finetuned"] is True
    assert set(report["data"]["label_names"]) == {
        "B-ASPECT", "I-ASPECT", "B-OPINION", "I-OPINION", "B-PRODUCT", "I-PRODUCT", "O"}
    e = report["eval"]
    assert 0.5 < e["teacher_word_accuracy"] <= 1.0
    # The student keeps the teacher's tagging: entity F1 ratio measured at 0.969, 0.959 and
    # 0.973 (data and run seeds 3, 4, 5; teacher 0.653, 0.700, 0.660; agreement per token
    # 0.967, 0.950, 0.981), 2026-12-07 on one worker of 32 rows a step: the 0.9 bound is 0.059
    # under the lowest (on two workers of 16, 2026-12-01: 0.961, 0.983, 0.956).
    assert e["teacher_entity_f1"] > 0.6
    assert e["student_entity_f1"] >= 0.9 * e["teacher_entity_f1"], e
    assert e["agreement"] >= 0.9, e
    assert report["teacher_inference"]["outputs"] == ["logits", "hidden"]
    _losses_fell(report)


def test_every_stages_curves_are_in_tensorboard(token_run):
    """<run>/tensorboard/: each stage's total and per-loss values, learning rate, steps/s at
    every logged step (the teacher's fine-tune with its dev score per epoch); the report's
    final figures."""
    from test_tensorboard_log import read_scalars

    root, report = token_run
    board = root / "run" / "tensorboard"
    assert sorted(os.listdir(board)) == ["1-representation", "2-logits", "report",
                                         "teacher_finetune"]
    history = json.loads((root / "run" / "stages" / "2-logits" / "losses.json").read_text())
    scalars = read_scalars(str(board / "2-logits"))
    assert [step for step, _ in scalars["loss/total"]] == [row[0] for row in history["history"]]
    assert [v for _, v in scalars["loss/total"]] == pytest.approx(
        [row[1] for row in history["history"]], rel=1e-5)
    assert "loss/0_logits" in scalars and scalars["learning_rate"][0][1] > 0
    assert all(v > 0 for _, v in scalars["steps_per_second"])
    assert "dev/entity_f1" in read_scalars(str(board / "teacher_finetune"))


def test_the_teacher_fine_tune_keeps_its_best_epoch_on_dev(token_run):
    """tiny.yaml fine-tunes the teacher for at most 2 epochs (patience 1): entity F1 on the dev
    rows after each, the better epoch's weights kept (the report's dev figure is theirs)."""
    _, report = token_run
    v = report["teacher"]["finetune"]["validation"]
    assert v["metric"] == "entity_f1" and [s[0] for s in v["scores"]] == [1, 2]
    best = max(v["scores"], key=lambda s: s[2])
    assert v["kept_epoch"] == best[0] and not v["stopped_early"]
    assert report["eval"]["teacher_entity_f1"] == pytest.approx(best[2], abs=1e-6)


def test_a_local_ray_train_group_starts_no_preemption_watcher(token_run):
    """Ray Train starts an actor (a process) per worker group to watch for spot preemption;
    a Ray of one machine runs without it (ray_start.LOCAL_RAY_ENV)."""
    from ray.util.state import list_actors

    assert list_actors(filters=[("class_name", "=", "TrainController")], limit=10_000,
                       raise_on_missing_output=False)  # the run's groups were there
    assert list_actors(filters=[("class_name", "=", "PreemptionWatcher")], limit=10_000,
                       raise_on_missing_output=False) == []


def test_token_student_tags_words(token_run):
    root, report = token_run
    from transformers import AutoModelForTokenClassification, pipeline

    folder = str(root / "run" / "student")
    assert type(AutoModelForTokenClassification.from_pretrained(folder)).__name__ == \
        "BertForTokenClassification"
    tagger = pipeline("token-classification", model=folder, tokenizer=folder,
                      aggregation_strategy="first")
    words = tagger("the battery of this phone is great")
    assert words and all(w["entity_group"] in {"ASPECT", "OPINION", "PRODUCT", "O"} for w in words)


@pytest.fixture(scope="module")
def agnostic_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("agnostic")
    report = _run(root, "none", [
        {"name": "mha-hs", "targets": "online", "epochs": 4, "unfreeze": "none",
         "losses": [{"type": "attention_relations", "relation_heads": 4},
                    {"type": "hidden_states", "layer_map": "uniform", "weight": 0.1}]}])
    return root, report


def test_task_agnostic_run_with_mha_and_hs(agnostic_run):
    root, report = agnostic_run
    assert report["task"] == "none" and report["teacher_inference"] is None
    assert report["teacher"]["finetuned"] is False
    assert report["stages"][0]["targets"] == "online"
    assert 0.0 < report["eval"]["representation_cka"] <= 1.0
    _losses_fell(report)
    from transformers import AutoModel

    student = AutoModel.from_pretrained(str(root / "run" / "student"))
    assert type(student).__name__ == "BertModel" and student.config.num_hidden_layers == 2


def write_binary_sentiment(folder: str, *, seed: int, num_train: int, num_dev: int) -> dict:
    """Positive / negative reviews (the embedded generator's two polarities, no label noise):
    a task a 72-step fine-tune of a tiny student learns, so that what distillation bought
    shows (on the embedded four-way rating, with its noise, both students stayed near 42%
    after 72 steps: 42.4% distilled, 42.2% from scratch, seed 0)."""
    import os
    import random

    from xdistil_ray.data.embedded_reviews import review

    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < num_train + num_dev:
        positive = rng.random() < 0.5
        text = review(rng, positive)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": "positive" if positive else "negative"})
    os.makedirs(folder, exist_ok=True)
    paths = {"train": os.path.join(folder, "train.jsonl"), "dev": os.path.join(folder, "dev.jsonl")}
    for split, part in (("train", rows[:num_train]), ("dev", rows[num_train:])):
        with open(paths[split], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    return paths


def _finetune(root, student: str, init: str, data: dict, extra: tuple = ()):
    from xdistil_ray.pipelines import finetune

    return finetune.run(_finetune_config(root, student, init, data, extra))


def _finetune_config(root, student: str, init: str, data: dict, extra: tuple = ()):
    from xdistil_ray.config import FinetuneJob

    return load_config("jobs/configs/finetune.yaml", [
        f"output={root}/ft-{init}", f"model={student}", f"init={init}",
        f"labeled.train={data['train']}", f"labeled.dev={data['dev']}", "max_length=32",
        "finetune.epochs=3", "finetune.batch_size=16", "finetune.learning_rate=1e-3",
        "train.log_every_steps=5",
        "train.torch_threads=1", *extra], kind=FinetuneJob)


def test_finetuned_distilled_student_beats_the_same_shape_from_scratch(agnostic_run,
                                                                       tmp_path_factory):
    """XtremeDistilTransformers' use: the task-agnostic student, fine-tuned on a small labeled
    set of a task it never saw labels of, against an untrained student of the same shape given
    the same fine-tuning."""
    from transformers import pipeline

    root, _ = agnostic_run
    ft_root = tmp_path_factory.mktemp("finetune")
    data = write_binary_sentiment(str(ft_root / "inputs"), seed=11, num_train=384, num_dev=512)
    distilled = _finetune(ft_root, str(root / "run" / "student"), "pretrained", data)
    scratch = _finetune(ft_root, str(root / "run" / "student"), "random", data)
    for report in (distilled, scratch):
        assert report["eval"]["dev_rows"] == 512 and report["finetune"]["steps"] == 72
        assert report["size"]["num_layers"] == 2 and report["size"]["hidden_size"] == 64
        # Validated on dev after each epoch (the job's patience 0: all 3 run), the best kept.
        v = report["finetune"]["validation"]
        assert len(v["scores"]) == 3 and not v["stopped_early"], v
        assert v["scores"][v["kept_epoch"] - 1][2] == max(score for *_, score in v["scores"])
        assert report["eval"]["accuracy"] == pytest.approx(v["scores"][v["kept_epoch"] - 1][2],
                                                           abs=1.5 / 512)  # the kept weights
        # Ray Train reports only checkpoints: a report per log interval (5 steps here) waited
        # for the controller's 2 s poll and held this stage to 2.5-2.7 steps/s; measured after:
        # 17.2 and 22.5 steps/s.
        assert report["finetune"]["steps_per_second"] > 6, report["finetune"]
    # A head start after the same short fine-tuning (72 steps) on positive / negative reviews:
    # distilled vs scratch dev accuracy, measured 2026-12-01 (this agnostic run, the binary
    # data at seed 11): 80.3 / 72.1 at run seed 0, 82.0 / 75.6 at seed 1 (8.2 and 6.4 points);
    # on 2026-11-30's corpus 80.3 / 73.8 and 84.6 / 72.5 at seed 0, 79.5 / 77.2 at seed 1. The
    # margin, 5 points, is under every measurement at this test's seed (0: 6.5-12.1 points);
    # at another seed the head start has measured as little as 2.3, so the seed stays fixed.
    # Since the agnostic run trains on one worker (2026-12-07), run seeds 0 / 1 / 2 of this
    # fine-tune: 83.4 / 78.3 / 77.5 distilled, 70.3 / 76.8 / 66.2 from scratch (13.1, 1.6 and
    # 11.3 points; macro-F1 83.3 / 78.3 / 77.5 against 68.8 / 76.6 / 63.8).
    # Those "fixed seed" runs are not reproducible: the rows reach the stage in the order their
    # reads finish, and the same seed 0 gave 77.7 / 73.6 (4.1 points, beside other work) and
    # 80.3 / 72.5 alone (2026-12-07). Ray Data's preserve_order on the ingest made them
    # reproducible (78.9 / 53.5 twice, with the stage keeping its best epoch) but left the QA
    # default's one-epoch stages in file order, and its student fell to 35% F1: reverted the
    # same day, so this margin is measured on a run that varies (issue 31).
    print(f"\n[finetune] dev accuracy distilled {distilled['eval']['accuracy']:.3f}, "
          f"scratch {scratch['eval']['accuracy']:.3f}")
    assert distilled["eval"]["accuracy"] >= scratch["eval"]["accuracy"] + 0.05, (
        distilled["eval"], scratch["eval"])
    assert distilled["eval"]["macro_f1"] > scratch["eval"]["macro_f1"]
    folder = str(ft_root / "ft-pretrained" / "model")
    out = pipeline("text-classification", model=folder, tokenizer=folder)("The battery is great")
    assert out[0]["label"] in distilled["data"]["label_names"]
    md = (ft_root / "ft-pretrained" / "report.md").read_text()
    assert md.count("| dev accuracy") == 1 and "- validation: dev accuracy by epoch" in md
    with pytest.raises(ConfigError, match="finetune.epochs"):  # same folder, other settings
        _finetune(ft_root, str(root / "run" / "student"), "pretrained", data,
                  ("finetune.epochs=4",))
    # The job's --dry-run agrees with its run on the finished folder: only the report runs.
    from xdistil_ray.pipelines.dry_run import dry_run

    planned = dry_run(_finetune_config(ft_root, str(root / "run" / "student"), "pretrained", data))
    assert [s.name for s in planned if s.runs] == ["report"], planned


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, ray_local):
    """Extractive QA on the embedded SQuAD 2.0-style data, windows of 64 tokens (contexts of
    several sentences take two or three), through every step, small enough to run in the suite
    and large enough to learn: its scores are bounded (``test_extractive_qa_run``).

    Until 2026-12-07 it ran 256 questions, one fine-tune epoch and a 2 x 64 student, and was
    checked for shape only: its teacher stayed at "no answer" (dev F1 23.6%, the share of
    unanswerable questions), so it could not have caught the QA default's fall to 35% F1
    that day. Tried on the way (run seed 0 unless said): 3 fine-tune epochs at 3e-4 on 256
    questions and a 2 x 384 student: teacher 92.2%, student 23.4% (35 logits steps); 4 x 384:
    teacher 76.9%, student 58.6%; 4 epochs at batch 16: teacher 93.8%, student 92.6%, but at
    seed 1 the fine-tune stopped on its patience at 28.0%, and at 3 epochs the teacher ended at
    42.5% (the same seed as the 76.9%: runs do not repeat). 512 questions with every epoch run
    (patience 0) is what this fixture keeps (measured beside the test's bounds)."""
    root = tmp_path_factory.mktemp("qa")
    report = _run(root, "qa", [
        {"name": "logits", "losses": [{"type": "logits", "function": "kl", "temperature": 2.0}],
         "epochs": 2, "learning_rate": 5.0e-4},
        {"name": "labels", "losses": [{"type": "labels"}], "epochs": 1, "learning_rate": 5.0e-4}],
        ["qa.max_length=64", "qa.doc_stride=16", "teacher.finetune.epochs=3",
         "teacher.finetune.batch_size=16", "teacher.finetune.learning_rate=3e-4",
         "teacher.finetune.patience=0", "student.num_layers=4", "student.hidden_size=384",
         "student.num_heads=12", "student.intermediate_size=1536"],
        num_corpus=640, num_train=512)
    return root, report


def test_extractive_qa_run(qa_run):
    from transformers import AutoModelForQuestionAnswering

    from xdistil_ray.export.answer import Answerer

    root, report = qa_run
    d = report["data"]
    assert report["task"] == "qa" and report["teacher"]["finetuned"] is True
    assert d["input_rows"] == d["kept"] + sum(d["dropped"].values())
    train = d["labeled"]["train"]
    assert train["windows"] > train["kept"] > 0  # long contexts take several windows
    e = report["eval"]
    assert e["dev_rows"] == 64 and e["heldout_questions"] > 0
    for who in ("teacher", "student"):
        assert 0.0 <= e[f"{who}_exact"] <= e[f"{who}_f1"] <= 1.0
        assert e[f"{who}_has_ans_total"] + e[f"{who}_no_ans_total"] == 64
    # Measured 2026-12-07 over run seeds 0 / 1 / 2 (this fixture's settings, `seed=` added):
    # teacher dev F1 96.9 / 95.3 / 98.4% (its fine-tune's epochs 67.9, 96.9, 96.9 / 76.8, 91.7,
    # 95.3 / 40.6, 94.8, 98.4), student 98.4 / 93.9 / 95.3% (ratio 1.016 / 0.985 / 0.968),
    # agreement of the answers on held-out questions 93.8 / 92.2 / 93.8%; 304-319 s alone.
    # Each bound sits about 10 points under the lowest (a dev question is 1.6 points); a
    # student that says "no answer" everywhere (the 35% F1 of the QA default's regression, the
    # 23.4% this fixture scored before) fails all three.
    assert e["teacher_f1"] >= 0.85, e
    assert e["student_f1"] >= 0.9 * e["teacher_f1"], e
    assert e["agreement"] >= 0.8 and e["agreement_f1"] >= e["agreement"], e
    assert 0.0 <= e["agreement"] <= e["agreement_f1"] <= 1.0, e  # shares, whatever the bounds
    _losses_fell(report)
    folder = str(root / "run" / "student")
    assert type(AutoModelForQuestionAnswering.from_pretrained(folder)).__name__.endswith(
        "ForQuestionAnswering")
    context = "The screen of the laptop is awful. The battery of the phone is really great."
    answer = Answerer(folder, threshold=math.inf)(question="How is the battery of the phone?",
                                                  context=context)  # always a span
    assert answer["answer"] and context[answer["start"]:answer["end"]] == answer["answer"]
    md = (root / "run" / "report.md").read_text()
    assert "| dev EM | dev F1 |" in md and "agreement of the answers" in md
    card = (root / "run" / "student" / "README.md").read_text()  # the Answerer, not a pipeline
    assert "answer = Answerer(folder, threshold=" in card and "pipeline(" not in card
    assert "windows=WindowSettings(max_length=64, doc_stride=16" in card
