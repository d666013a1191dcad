"""A sweep's config, plan and choice (no training: tests/test_tasks_integration.py runs one)."""

import pytest

from xdistil_ray.config import ConfigError, SelectConfig, candidate_config, load_config
from xdistil_ray.pipelines.dry_run import dry_run
from xdistil_ray.report import selection
from xdistil_ray.run.markers import EvalMarker, InitMarker

TWO = "candidates=[{name: narrow}, {name: wide, student: {hidden_size: 128, num_heads: 4}, " \
      "learning_rate_scale: 5.0, temperature: 3.0}]"


def test_a_candidate_is_the_runs_student_with_its_own_fields_over_it():
    cfg = load_config("tiny", [TWO, "stages.1.losses.0.function=kl"])
    narrow, wide = cfg.candidates
    assert narrow.student == cfg.student  # nothing of its own: the run's student
    assert (wide.student.hidden_size, wide.student.num_heads) == (128, 4)
    assert wide.student.num_layers == cfg.student.num_layers  # the rest is the run's
    c = candidate_config(cfg, wide)
    assert c.student == wide.student and c.candidates == []
    assert [s.learning_rate for s in c.stages] == [5 * s.learning_rate for s in cfg.stages]
    assert c.stages[1].losses[0].temperature == 3.0  # a KL logits loss takes it
    assert c.stages[0].losses[0].temperature == cfg.stages[0].losses[0].temperature
    assert candidate_config(cfg, narrow).stages == cfg.stages  # no recipe fields: unchanged


def test_a_resolved_sweep_config_reads_back_as_itself(tmp_path):
    from xdistil_ray.config import dump_yaml

    cfg = load_config("tiny", [TWO])
    (tmp_path / "c.yaml").write_text(dump_yaml(cfg))
    assert load_config(str(tmp_path / "c.yaml")) == cfg


@pytest.mark.parametrize("overrides, message", [
    (["candidates=[{name: a}, {name: a}]"], "names must be unique.*a given more than once"),
    (["candidates=[{name: 'a b'}]"], r"candidates.0.name: a folder name"),
    (["candidates=[{name: ../up}]"], r"candidates.0.name: a folder name"),
    (["select.rule=smallest"], "select: picks one of `candidates`, and none is given"),
    ([TWO, "select.rule=cheapest"], "select.rule: must be one of best, smallest, fastest"),
    ([TWO, "select.min_retained=0"], r"select.min_retained: must be in \(0, 1.5\]"),
    (["candidates=[{name: a, student: {hidden_size: 100, num_heads: 3}}]"],
     "candidates.0.student.hidden_size: must be a multiple of candidates.0.student.num_heads"),
    (["candidates=[{name: a, learning_rate_scale: 0}]"], "candidates.0.learning_rate_scale"),
    (["candidates=[{name: a, size: 3}]"], "unknown config key 'candidates.0.size'"),
])
def test_a_bad_sweep_is_refused_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_the_sweep_plans_each_candidates_steps_in_its_folder(tmp_path):
    cfg = load_config("tiny", [f"output={tmp_path}/run", TWO, "select.rule=smallest"])
    steps = dry_run(cfg)
    names = [s.name for s in steps]
    assert names[:3] == ["data", "teacher_finetune", "teacher"]  # once for all candidates
    for who in ("narrow", "wide"):
        assert [n for n in names if n.startswith(f"{who}: ")] == [
            f"{who}: {n}" for n in ("student_init", "stage 1: representation",
                                    "stage 2: logits", "stage 3: labels", "student", "eval")]
    by_name = {s.name: s for s in steps}
    assert by_name["wide: stage 2: logits"].folder == "candidates/wide/stages/2-logits"
    assert by_name["wide: stage 2: logits"].reads[0] == \
        "candidates/wide/stages/1-representation/model"
    assert by_name["wide: eval"].reads[0] == "candidates/wide/student"
    assert names[-2:] == ["student (chosen)", "report"]
    assert not (tmp_path / "run").exists()


def test_a_candidate_the_teacher_cannot_make_is_refused_before_any_work(tmp_path):
    cfg = load_config("tiny", [f"output={tmp_path}/run",
                               "candidates=[{name: ok}, {name: deep, student: {num_layers: 2, "
                               "teacher_layers: [5, 9]}}]"])
    with pytest.raises(ConfigError, match="candidates: 'deep': student.teacher_layers: the "
                                          "teacher has 6 blocks"):
        dry_run(cfg)
    assert not (tmp_path / "run").exists()


def _figures(name, params, latency, score, teacher=0.9, agreement=0.9, int8=None):
    speed = {"cpu": {"student_latency_ms": latency, "student_throughput": 1000 / latency,
                     **({"onnx": {"int8": {"latency_ms": int8, "throughput": 2000 / int8}}}
                        if int8 else {})}}
    e = {"student_accuracy": score, "teacher_accuracy": teacher, "student_macro_f1": score,
         "teacher_macro_f1": teacher, "agreement": agreement}
    evaluation = EvalMarker(eval=e, size={"student_params": params, "student_disk_bytes":
                                          4 * params}, speed=speed)
    init = InitMarker(student_shape={"num_hidden_layers": 2, "hidden_size": params // 1000})
    return selection.figures(name, evaluation, init)


ROWS = [_figures("tiny", 1_000_000, 1.0, 0.80),      # smallest, fastest, worst
        _figures("mid", 4_000_000, 2.0, 0.88),       # keeps 97.8%
        _figures("big", 20_000_000, 6.0, 0.90),      # best
        _figures("slow", 30_000_000, 9.0, 0.89)]     # dominated by big


def test_figures_read_the_candidates_eval():
    f = _figures("x", 2_000_000, 1.5, 0.85, int8=0.5)
    assert (f.metric, f.score, f.params, f.disk_bytes, f.shape) == (
        "accuracy", 0.85, 2_000_000, 8_000_000, "L2-H2000")
    assert f.retained == pytest.approx(0.85 / 0.9)
    assert (f.int8_latency_ms, f.int8_throughput) == (0.5, 4000)


def test_without_dev_scores_the_score_is_the_agreement():
    e = EvalMarker(eval={"agreement": 0.93, "representation_cka": 0.8},
                   size={"student_params": 5, "student_disk_bytes": 20},
                   speed={"cpu": {"student_latency_ms": 1.0, "student_throughput": 10.0}})
    f = selection.figures("x", e, InitMarker(student_shape={"num_hidden_layers": 1,
                                                            "hidden_size": 8}))
    assert (f.metric, f.score, f.retained) == ("agreement", 0.93, 0.93)
    trimmed = InitMarker(student_shape={"num_hidden_layers": 1, "hidden_size": 8},
                         vocab={"kept": 6012, "teacher_ids": [0, 1]})
    assert selection.figures("x", e, trimmed).shape == "L1-H8, V6,012"  # a trimmed vocabulary


def test_the_pareto_front_drops_the_dominated_candidates_only():
    assert selection.pareto_front(ROWS) == ["tiny", "mid", "big"]
    same = [_figures("a", 1000, 1.0, 0.8), _figures("b", 1000, 1.0, 0.8)]
    assert selection.pareto_front(same) == ["a", "b"]  # equal: neither dominates


@pytest.mark.parametrize("select, chosen, met, words", [
    (SelectConfig(), "big", True, r"the highest dev accuracy \(90.0%\)"),
    (SelectConfig(max_latency_ms=2.5), "mid", True, "within the 2.5 ms latency budget"),
    (SelectConfig(max_latency_ms=0.5), "tiny", False, "no candidate meets the 0.5 ms"),
    (SelectConfig(rule="smallest", min_retained=0.97), "mid", True,
     r"the fewest parameters \(4.0M\) of the candidates keeping at least 97.0%"),
    (SelectConfig(rule="smallest", min_retained=0.85), "tiny", True, "it keeps 88.9%"),
    (SelectConfig(rule="fastest", min_retained=0.99), "big", True, "lowest CPU latency"),
    (SelectConfig(rule="smallest", min_retained=1.2), "big", False,
     "no candidate keeps 120.0% of the teacher's dev accuracy.*the closest, big"),
])
def test_the_rule_picks_its_candidate_and_says_why(select, chosen, met, words):
    import re

    choice = selection.choose(ROWS, select)
    assert (choice.name, choice.met) == (chosen, met), choice
    assert re.search(words, choice.reason), choice.reason


def test_the_reports_candidates_table_marks_the_front_and_the_chosen_one():
    choice = selection.choose(ROWS, SelectConfig(rule="smallest"))
    section = selection.section(ROWS, choice, SelectConfig(rule="smallest"))
    assert section["front"] == ["tiny", "mid", "big"] and section["chosen"] == "mid"
    lines = selection.markdown(section)
    mid = next(line for line in lines if line.startswith("| mid |"))
    slow = next(line for line in lines if line.startswith("| slow |"))
    assert mid.endswith("| ★✔ |") and slow.endswith("|  |")
    assert "| 4.00M | 16.0 MB | 2.00 | 500 | - | - | 88.0% | 97.8% | 90.0% |" in mid
    assert any("Exported as `student/`: **mid**" in line for line in lines)
    from xdistil_ray.report import plots

    assert plots.candidates(section)[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_of_candidates_at_the_same_point_go_one_under_the_other():
    from xdistil_ray.report.plots import _label_lines

    rows = [{"name": n, "latency_ms": x, "score": y} for n, x, y in
            [("a", 0.93, 0.93), ("b", 2.55, 0.93), ("c", 0.89, 0.93), ("d", 2.02, 0.93),
             ("e", 0.90, 0.93)]]
    assert _label_lines(rows) == {"a": 0, "b": 0, "c": 1, "d": 0, "e": 2}
