"""The driver's console: project lines shown, everything else in the logs; live progress lines."""

import io
import os
import subprocess
import sys
import textwrap

from xdistil_ray.observe import console
from xdistil_ray.observe.console import Console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _console(verbose=False, live=False):
    out, err, driver, workers = io.StringIO(), io.StringIO(), io.StringIO(), io.StringIO()
    return Console(out, driver, workers, verbose=verbose, live=live, err=err), out, err, driver, workers


def test_only_project_lines_reach_the_console_and_every_line_the_logs():
    con, out, _, driver, workers = _console()
    con.driver_line("2026-11-29 INFO streaming_executor.py:215 -- Starting execution")
    con.driver_line("[xdistil] data: running")
    con.worker_lines({"pid": 12, "ip": "127.0.0.1", "actor_name": "RayTrainWorker",
                      "lines": ["Loading weights: 100%", "[xdistil] logits: step 5/10, loss 0.5, "
                                "1.00 steps/s, elapsed 5s, ~5s left"]})
    assert out.getvalue().splitlines() == [
        "[xdistil] data: running",
        "[xdistil] logits: step 5/10, loss 0.5, 1.00 steps/s, elapsed 5s, ~5s left"]
    assert "Starting execution" in driver.getvalue()
    assert "(RayTrainWorker pid=12, ip=127.0.0.1) Loading weights: 100%" in workers.getvalue()
    assert con.num_shown == 2


def test_verbose_shows_everything_with_the_workers_prefix():
    con, out, *_ = _console(verbose=True)
    con.driver_line("a DeepSpeed line")
    con.worker_lines({"pid": 7, "ip": "10.0.0.2", "task_name": "read", "lines": ["noise"]})
    assert out.getvalue().splitlines() == ["a DeepSpeed line", "(read pid=7, ip=10.0.0.2) noise"]


def test_on_a_terminal_progress_lines_of_one_label_overwrite_each_other():
    con, out, *_ = _console(live=True)
    con.driver_line("[xdistil] teacher: running")
    con.driver_line("[xdistil] teacher: 10/100 (10%) rows, 5 rows/s, ~18s left")
    con.driver_line("[xdistil] teacher: 50/100 (50%) rows, 5 rows/s, ~10s left")
    con.driver_line("[xdistil] logits: step 5/10, loss 0.5, 1.00 steps/s, elapsed 5s, ~5s left")
    con.driver_line("[xdistil] teacher: done in 20s")
    assert out.getvalue() == (
        "[xdistil] teacher: running\n"
        "\r\x1b[K[xdistil] teacher: 10/100 (10%) rows, 5 rows/s, ~18s left"
        "\r\x1b[K[xdistil] teacher: 50/100 (50%) rows, 5 rows/s, ~10s left\n"  # kept
        "\r\x1b[K[xdistil] logits: step 5/10, loss 0.5, 1.00 steps/s, elapsed 5s, ~5s left\n"
        "[xdistil] teacher: done in 20s\n")


def test_errors_reach_stderr_whatever_the_filter():
    con, out, err, driver, _ = _console()
    con.error("Traceback (most recent call last):\n  boom")
    assert err.getvalue() == "Traceback (most recent call last):\n  boom\n"
    assert out.getvalue() == "" and "boom" in driver.getvalue()


def test_capture_routes_python_native_and_child_output_to_the_log(tmp_path):
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys
        from xdistil_ray.observe import console
        from xdistil_ray.run.runfolder import RunFolder
        with console.capture():
            logging.basicConfig(level=logging.INFO)
            print("[xdistil] shown")
            print("python noise")
            logging.getLogger("ray").warning("a library warning")
            os.write(1, b"native noise\\n")
            subprocess.run(["echo", "child noise"])
            console.attach_run(RunFolder({str(tmp_path)!r}))
        print("after the capture")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[xdistil] shown", f"[xdistil] logs: {tmp_path}/logs/ "
        + done.stdout.split("logs/ ", 1)[1].splitlines()[0], "after the capture"]
    assert done.stderr == ""
    (driver_log,) = [p for p in (tmp_path / "logs").iterdir() if p.name.startswith("driver-")]
    text = driver_log.read_text()
    for noise in ("[xdistil] shown", "python noise", "a library warning", "native noise",
                  "child noise"):
        assert noise in text


def test_the_packages_log_records_are_its_console_lines(capsys):
    """Library modules log (``logging.getLogger(__name__)``); every process that imports the
    package shows the records as ``[xdistil]`` lines, and code that imports it quiets them as
    any library's logs."""
    import logging

    logger = logging.getLogger("xdistil_ray.pipelines.distill")
    logger.info("data: running")
    logger.warning("the teacher's head names ['neg', 'pos']")
    console.show("[xdistil] done in 5s\n[xdistil] report:  run/report.md")
    assert capsys.readouterr().out.splitlines() == [
        "[xdistil] data: running", "[xdistil] warning: the teacher's head names ['neg', 'pos']",
        "[xdistil] done in 5s", "[xdistil] report:  run/report.md"]
    package = logging.getLogger("xdistil_ray")
    level = package.level
    package.setLevel(logging.WARNING)
    try:
        logger.info("data: running")
        assert capsys.readouterr().out == ""
    finally:
        package.setLevel(level)


def test_library_modules_print_only_where_listed():
    """Output for the person watching goes through logging; ``print`` stays where a command
    prints its own output or a worker writes a line for its log only."""
    import ast
    import os

    import xdistil_ray

    allowed = {"pipelines/cli.py": "an error on stderr before any console exists",
               "pipelines/dry_run.py": "the plan is the dry run's output",
               "distill/train_loop.py": "a worker's line for its log, not the console",
               "observe/console.py": "the console itself"}
    root = os.path.dirname(xdistil_ray.__file__)
    found = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                tree = ast.parse(open(path, encoding="utf-8").read())
                if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
                       for n in ast.walk(tree)):
                    found.add(os.path.relpath(path, root))
    assert found <= set(allowed), found - set(allowed)
