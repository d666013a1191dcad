"""GPU checks: skipped without CUDA."""

import numpy as np
import pytest
import torch

from xdistil_ray.steps.teacher_inference import TeacherInference

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_teacher_inference_on_gpu_matches_cpu(tiny_classifier_dir):
    rows = np.array([np.array([101, 2023, 2003, 102]), np.array([101, 7592, 102])], dtype=object)
    cpu = TeacherInference(tiny_classifier_dir, ("logits", "cls"), device="cpu")({"input_ids": rows})
    gpu = TeacherInference(tiny_classifier_dir, ("logits", "cls"), device="cuda")({"input_ids": rows})
    np.testing.assert_allclose(gpu["logits"], cpu["logits"], atol=1e-2)
    np.testing.assert_allclose(gpu["cls"], cpu["cls"], atol=2e-2)
