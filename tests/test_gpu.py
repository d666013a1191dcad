"""GPU checks: skipped without CUDA."""

import numpy as np
import pytest
import torch

from xdistil_ray.steps.teacher_inference import TeacherInference

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_teacher_inference_on_gpu_matches_cpu(tiny_classifier_dir):
    rows = np.array([np.array([101, 2023, 2003, 102]), np.array([101, 7592, 102])], dtype=object)
    cpu = TeacherInference(tiny_classifier_dir, ("logits", "hidden"), device="cpu")({"input_ids": rows})
    gpu = TeacherInference(tiny_classifier_dir, ("logits", "hidden"), device="cuda")({"input_ids": rows})
    np.testing.assert_allclose(gpu["logits"], cpu["logits"], atol=1e-2)
    np.testing.assert_allclose(gpu["hidden"], cpu["hidden"], atol=2e-2)


def test_online_teacher_runs_bf16_on_gpu_close_to_fp32(tiny_classifier_dir):
    from xdistil_ray.models import load_classifier
    from xdistil_ray.objective import LossSpec, OnlineTeacher

    specs = [LossSpec("hidden_states", pairs=((1, 3),)),
             LossSpec("attention_relations", relation_heads=4, student_block=0, teacher_block=2)]
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 7592, 102, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    cpu = OnlineTeacher(load_classifier(tiny_classifier_dir), specs, torch.device("cpu"))(batch)
    gpu_teacher = OnlineTeacher(load_classifier(tiny_classifier_dir), specs, torch.device("cuda"))
    assert next(gpu_teacher.model.parameters()).dtype == torch.bfloat16
    gpu = gpu_teacher({k: v.cuda() for k, v in batch.items()})
    assert gpu["hidden_states"][3].dtype == torch.float32  # targets handed over in fp32
    torch.testing.assert_close(gpu["hidden_states"][3].cpu(), cpu["hidden_states"][3],
                               atol=5e-2, rtol=5e-2)
    for g, c in zip(gpu["qkv"], cpu["qkv"]):
        torch.testing.assert_close(g.cpu(), c, atol=5e-2, rtol=5e-2)


def test_evaluation_measures_speed_on_the_gpu_too(tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification

    from xdistil_ray.steps.evaluate import speed

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    rows = {"input_ids": [[101, 2023 + i, 2003, 102] for i in range(16)]}
    s = speed(model, model, rows, batch_size=16, repeats=3, torch_threads=1)
    assert set(s) >= {"cpu", "cuda"} and s["cuda"]["student_throughput"] > 0
    assert next(model.parameters()).device.type == "cpu"  # moved back after timing
