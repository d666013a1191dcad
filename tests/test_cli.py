"""The job script's argument handling: user mistakes stop it before Ray starts."""

import subprocess
import sys
import time


def _run(*args, cwd="."):
    start = time.time()
    proc = subprocess.run([sys.executable, "jobs/distill.py", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    return proc, time.time() - start


def test_unknown_key_stops_before_any_work(tmp_path):
    proc, _ = _run(f"output={tmp_path}/run", "corpus.max_lenght=3")
    assert proc.returncode == 2
    assert "corpus.max_lenght" in proc.stderr and "valid keys" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_wrong_type_names_field(tmp_path):
    proc, _ = _run("--config", "jobs/configs/tiny.yaml", f"output={tmp_path}/run",
                   "train.num_workers=two")
    assert proc.returncode == 2 and "train.num_workers: expected an integer" in proc.stderr


def test_missing_corpus_is_clear_error_before_ray(tmp_path):
    proc, seconds = _run(f"output={tmp_path}/run", f"corpus.path={tmp_path}/nope.txt")
    assert proc.returncode == 2
    assert f"corpus.path: '{tmp_path}/nope.txt' does not exist" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr


def test_glob_matching_nothing(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    proc, _ = _run(f"output={tmp_path}/run", f"corpus.path={tmp_path}/*.txt")
    assert proc.returncode == 2 and "matches no .txt, .jsonl, .parquet, .tsv or .csv file" in proc.stderr


# Runs a job script as `python <script> ARGS` would, then says which heavy modules it loaded.
_LOADED = """import runpy, sys
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    print("loaded:", *sorted({"torch", "ray", "transformers"} & set(sys.modules)), file=sys.stderr)
"""


def test_finetune_without_a_model_or_with_a_missing_one(tmp_path):
    for args, message, config_only in (
            ([], "model: give the exported student to fine-tune", True),
            ([f"model={tmp_path}/nope/student"], "does not exist", False),
            (["model=x", "finetune.epochz=1"], "unknown config key 'finetune.epochz'", True)):
        proc = subprocess.run([sys.executable, "-c", _LOADED, "jobs/finetune.py",
                               f"output={tmp_path}/ft", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        if config_only:  # a config mistake stops before torch and Ray load (5 s of imports)
            assert proc.stderr.rstrip().endswith("loaded:"), (args, proc.stderr[-300:])
    assert not (tmp_path / "ft").exists()
