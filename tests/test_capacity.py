"""The capacity plan of ``--dry-run``: FLOPs, rows, bytes and steps on literal values and on a
fresh run folder over a corpus file. (Against a finished run's figures:
tests/test_cluster_integration.py, the dry run of the finished tiny job.)"""

import json

import pytest

from xdistil_ray.config import load_config
from xdistil_ray.data.readers import CorpusSource
from xdistil_ray.pipelines import capacity


def test_the_cpu_rate_reproduces_the_measurement_it_comes_from():
    """367 sentences/s of 17.8 real tokens through the 6 x 384 (1536) teacher on 2 threads."""
    per_row = capacity.flops_per_token(6, 384, 1536, 17.8) * 17.8
    assert per_row == pytest.approx(3.81e8, rel=0.01)
    assert 2 * capacity.CPU_GFLOPS_PER_THREAD * 1e9 / per_row == pytest.approx(367, rel=0.02)
    # BERT-base at 128 tokens: the usual 2 x 85M weights per token plus attention
    assert capacity.flops_per_token(12, 768, 3072, 128) == pytest.approx(
        2 * 12 * (4 * 768 ** 2 + 2 * 768 * 3072) + 4 * 12 * 128 * 768)


def test_rows_are_counted_or_estimated_and_say_which(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = tmp_path / "c.txt"
    text.write_text("".join(f"sentence number {i}\n" for i in range(1000)))
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"s {i}"}) + "\n" for i in range(300)))
    pq.write_table(pa.table({"text": [f"s{i}" for i in range(77)]}), tmp_path / "c.parquet")
    assert capacity.count_rows(CorpusSource("files", str(text), (str(text),), "txt")) == \
        capacity.Count(1000, "counted")
    both = CorpusSource("files", str(tmp_path), (str(text), str(jsonl)), "txt")
    assert capacity.count_rows(both).rows == 1300
    parquet = str(tmp_path / "c.parquet")
    assert capacity.count_rows(CorpusSource("files", parquet, (parquet,), "parquet")).rows == 77
    assert capacity.count_rows(None).rows is None
    assert capacity.count_rows(CorpusSource("hf_hub", "glue")).rows is None
    monkeypatch.setattr(capacity, "_COUNT_LIMIT", 100)  # a large file: sampled
    monkeypatch.setattr(capacity, "_SAMPLE", 4000)
    estimate = capacity.count_rows(CorpusSource("files", str(text), (str(text),), "txt"))
    assert estimate.rows == pytest.approx(1000, rel=0.05) and "estimated" in estimate.how


def test_a_fresh_run_over_a_corpus_file_is_planned_from_its_counted_rows(tmp_path, capsys):
    """6,000 corpus lines and the embedded labeled sets at the default recipe: the pass's rows
    and hours, the outputs' bytes and each stage's steps from the counted rows (the held-out
    share left out), the checkpoint from the student's shape."""
    from xdistil_ray.pipelines.dry_run import dry_run

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"a review of product {i} that was fine\n" for i in range(6000)))
    cfg = load_config(None, [f"output={tmp_path}/run", f"corpus.path={corpus}",
                             "corpus.with_labeled=false", "train.min_stage_steps=0"])
    dry_run(cfg)
    out = capsys.readouterr().out
    assert "[xdistil] capacity plan: 6,000 corpus rows (counted)" in out
    per_row = capacity.flops_per_token(6, 384, 1536, 64) * 64  # at most max_length tokens
    hours = 6000 * per_row / (2 * capacity.CPU_GFLOPS_PER_THREAD * 1e9) / 3600
    assert f"the pass: {hours:,.2f} h steady" in out
    # 6,000 rows less 5% held out, one epoch at batch 64 on 1 worker (5,700 / 64); the labels
    # stage reads the embedded labeled rows, which a dry run does not generate: unknown
    assert "stages' steps: representation 90, logits 90, labels ? " in out, out
    assert "teacher outputs: 795 B per row" in out  # 2 fp16 logits + 384 fp16 states, x 1.03
    assert "for a student of about 4.8M parameters" in out  # the report: 4,782,722


def test_gpu_actors_are_planned_at_the_assumed_peak_and_utilization(tmp_path):
    from xdistil_ray.config import ConfigError

    cfg = load_config(None, [f"output={tmp_path}/run", "teacher.inference.num_gpus_per_actor=1",
                             "teacher.inference.num_actors=8", "plan.gpu_peak_tflops=312",
                             "plan.gpu_mfu=0.4"])
    p = capacity.Plan(capacity.Count(10 ** 7, "counted"), 64.0, "", 2.8e10)
    lines = capacity._pass_lines(cfg, p)
    assert "8 actor(s) x 1 GPU at 312 TFLOP/s x MFU 0.4 (assumed" in lines[0]
    hours = 10 ** 7 * 2.8e10 / (8 * 312e12 * 0.4) / 3600
    assert f"the pass: {hours:,.2f} h steady" in lines[1]
    with pytest.raises(ConfigError, match="plan.gpu_mfu"):
        load_config(None, ["plan.gpu_mfu=1.5"])


def test_a_sweep_plans_each_candidates_checkpoints(tmp_path, capsys):
    """A sweep's candidates checkpoint their own students: the plan sizes each from its shape
    (the sweep recipe's four: the default L4-H128 is the 4.8M of the test above; a trimmed
    vocabulary's is at most its untrimmed twin's, known once its student_init has run)."""
    from xdistil_ray.pipelines.dry_run import dry_run
    from xdistil_ray.pipelines.inputs import resolve_inputs

    cfg = load_config("sweep", [f"output={tmp_path}/run"])
    dry_run(cfg)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "checkpoints, each candidate's own" in x)
    inputs = resolve_inputs(cfg, None, generate=False)
    params = dict(capacity.plan(cfg, None, inputs, None).candidates)
    assert list(params) == ["l4-h128", "l4-h128-trim", "l2-h64", "l2-h64-trim"]
    assert round(params["l4-h128"] / 1e5) == 48 and params["l2-h64"] < params["l4-h128"]
    assert "l4-h128 76.5 MB (4.8M parameters)" in line, line
    assert "l4-h128-trim at most 76.5 MB (4.8M parameters with the whole vocabulary)" in line
