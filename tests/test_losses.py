import math

import pytest
import torch

from xdistil_ray import losses


def test_representation_mse_literal():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    # row 0: (0 + 4)/2 = 2; row 1: (9 + 1)/2 = 5; mean 3.5
    assert losses.representation_mse(s, t).item() == pytest.approx(3.5)
    assert losses.representation_mse(s, t, torch.tensor([True, False])).item() == pytest.approx(2.0)


def test_logit_mse_matches_reference_and_is_fp32():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3).half(), torch.randn(5, 3).half()
    out = losses.logit_mse(s, t)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(torch.nn.functional.mse_loss(s.float(), t.float()).item(), rel=1e-6)


def test_kl_literal_and_reference():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (0.75, 0.25), p_s = (0.5, 0.5)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.logit_kl(s, t).item() == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(1)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / 2, -1), torch.softmax(t / 2, -1),
                                     reduction="batchmean") * 4
    assert losses.logit_kl(s, t, temperature=2.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_cross_entropy_literal():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 0])
    expected = (math.log(2.0) + -math.log(0.75)) / 2
    assert losses.label_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fn", [losses.representation_mse, losses.logit_mse, losses.logit_kl])
def test_identical_inputs_give_zero(fn):
    x = torch.randn(3, 4)
    assert fn(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("fn", [losses.representation_mse, losses.logit_mse, losses.logit_kl])
def test_all_masked_gives_zero_not_nan(fn):
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    out = fn(s, t, torch.zeros(3, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert torch.all(s.grad == 0)


def test_all_masked_cross_entropy():
    out = losses.label_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), torch.zeros(2, dtype=torch.bool))
    assert out.item() == 0.0

