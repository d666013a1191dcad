"""TensorBoard event files in the run folder (xdistil_ray/observe/tensorboard_log.py), read back from
their records as TensorBoard reads them."""

import os
import struct

import pytest

from xdistil_ray.observe import tensorboard_log
from xdistil_ray.run.runfolder import RunFolder


def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder``: tag -> [(step, value)] (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list] = {}
    for name in sorted(os.listdir(folder)):
        if os.path.isdir(os.path.join(folder, name)):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_a_stage_log_reaches_the_run_folder_at_each_sync(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    log = tensorboard_log.StageLog(run, "stages/1-representation", str(tmp_path))
    log.scalars(5, {"loss/total": 0.5, "loss/0:representation": 0.5, "learning_rate": 1e-3,
                    "grad_norm": None})
    log.sync()
    folder = tmp_path / "run" / "tensorboard" / "1-representation"
    assert read_scalars(str(folder))["loss/total"] == [(5, 0.5)]
    log.scalars(10, {"loss/total": 0.25})
    log.close()
    scalars = read_scalars(str(folder))
    assert scalars["loss/total"] == [(5, 0.5), (10, 0.25)]
    assert scalars["learning_rate"] == [(5, pytest.approx(1e-3))]
    assert "grad_norm" not in scalars  # None: not computed, not written
    assert [step for step, _ in scalars["steps_per_second"]] == [10]
    assert not os.path.exists(log.local)  # the local copy is gone once closed


def test_the_report_log_holds_rows_per_second_and_final_figures(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    report = {"teacher_inference": {"rows": 2000, "seconds": 8.0},
              "eval": {"student_accuracy": 0.9, "agreement": 0.95, "dev_rows": 100},
              "speed": {"cpu": {"speedup_latency": 3.0, "speedup_throughput": 8.0}},
              "size": {"compression": 4.7}}
    tensorboard_log.write_report(run, report, {"task": "sentence", "student.num_layers": 4})
    folder = tmp_path / "run" / "tensorboard" / "report"
    scalars = {}
    for root, _, files in os.walk(folder):  # hparams go to a sub-run of their own
        if files:
            scalars.update(read_scalars(root))
    assert scalars["teacher/rows_per_second"] == [(0, 250.0)]
    assert scalars["hparam/student_accuracy"] == [(0, pytest.approx(0.9))]
    assert scalars["hparam/cpu_speedup_throughput"] == [(0, 8.0)]
    assert scalars["hparam/compression"] == [(0, pytest.approx(4.7))]
