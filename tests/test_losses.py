import math

import pytest
import torch

from xdistil_ray.distill import losses


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



def test_token_level_mse_counts_only_real_tokens():
    s = torch.tensor([[[1.0, 1.0], [5.0, 5.0]], [[0.0, 2.0], [9.0, 9.0]]])  # [B=2, T=2, H=2]
    t = torch.zeros(2, 2, 2)
    mask = torch.tensor([[True, False], [True, False]])
    # counted: (1 + 1)/2 = 1 and (0 + 4)/2 = 2 -> 1.5
    assert losses.representation_mse(s, t, mask).item() == pytest.approx(1.5)
    assert losses.logit_mse(s, t, mask).item() == pytest.approx(1.5)


def test_hidden_states_mse_is_the_mean_over_layer_pairs():
    a, b = torch.ones(1, 2, 2), torch.full((1, 2, 2), 3.0)
    zero = torch.zeros(1, 2, 2)
    mask = torch.tensor([[True, True]])
    assert losses.hidden_states_mse([a, b], [zero, zero], mask).item() == pytest.approx((1 + 9) / 2)


def test_token_cross_entropy_ignores_unlabeled_positions():
    logits = torch.tensor([[[5.0, 1.0], [0.0, 0.0], [math.log(3.0), 0.0]]])  # [1, 3, 2]
    labels = torch.tensor([[losses.IGNORE_LABEL, 1, 0]])
    expected = (math.log(2.0) - math.log(0.75)) / 2
    assert losses.label_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    everything_ignored = torch.full((1, 3), losses.IGNORE_LABEL)
    assert losses.label_cross_entropy(logits, everything_ignored).item() == 0.0


def _qkv(x):
    return (x, x.clone(), x.clone())


def test_attention_relation_literal():
    # one relation head of width 1, two tokens: student x = (1, 0), teacher x = (0, 1).
    # student relations softmax([[1, 0], [0, 0]]) = [[.731059, .268941], [.5, .5]]
    # teacher relations softmax([[0, 0], [0, 1]]) = [[.5, .5], [.268941, .731059]]
    # KL row 0 = .5 ln(.5/.731059) + .5 ln(.5/.268941) = 0.120115
    # KL row 1 = .268941 ln(.268941/.5) + .731059 ln(.731059/.5) = 0.110943
    # mean 0.115529, summed over Q, K, V: 0.346587
    s = torch.tensor([[[1.0], [0.0]]])
    t = torch.tensor([[[0.0], [1.0]]])
    out = losses.attention_relation_kl(_qkv(s), _qkv(t), torch.tensor([[True, True]]), num_heads=1)
    assert out.item() == pytest.approx(0.346587, abs=1e-5)


def _reference_relation_kl(s, t, mask, heads):
    """Loops over batch, head and query: KL(p_t || p_s) of softmax(x x^T / sqrt(d)) over real keys."""
    total, count = 0.0, 0
    for b in range(s.shape[0]):
        real = [i for i in range(s.shape[1]) if mask[b, i]]
        for h in range(heads):
            def rel(x):
                d = x.shape[-1] // heads
                xh = x[b, real, h * d:(h + 1) * d].double()
                return torch.softmax(xh @ xh.T / math.sqrt(d), dim=-1)
            ps, pt = rel(s), rel(t)
            total += float((pt * (pt.log() - ps.log())).sum())
            count += len(real)
    return total / count


def test_attention_relation_matches_reference_with_different_head_counts_and_widths():
    torch.manual_seed(0)
    s = torch.randn(2, 5, 8)   # student width 8 (e.g. 2 heads of 4)
    t = torch.randn(2, 5, 12)  # teacher width 12 (e.g. 3 heads of 4)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    for heads in (1, 2, 4):
        out = losses.attention_relation_kl((s,), (t,), mask, num_heads=heads)
        assert out.item() == pytest.approx(_reference_relation_kl(s, t, mask, heads), rel=1e-5)


def test_attention_relation_edge_cases():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert losses.attention_relation_kl(_qkv(x), _qkv(x.detach()), mask, num_heads=3).item() == \
        pytest.approx(0.0, abs=1e-6)
    out = losses.attention_relation_kl(_qkv(x), _qkv(torch.randn(2, 4, 6)),
                                       torch.zeros(2, 4, dtype=torch.bool), num_heads=2)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad == 0)
    # padding does not change the relations of the real tokens
    padded = torch.cat([x.detach(), torch.randn(2, 3, 6) * 100], dim=1)
    t = torch.randn(2, 4, 6)
    t_padded = torch.cat([t, torch.randn(2, 3, 6)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    a = losses.attention_relation_kl((x.detach(),), (t,), mask, num_heads=2)
    b = losses.attention_relation_kl((padded,), (t_padded,), pad_mask, num_heads=2)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    with pytest.raises(AssertionError, match="not a multiple"):
        losses.attention_relation_kl((x,), (x,), mask, num_heads=4)
