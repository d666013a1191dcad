import pytest
import torch

from xdistil_ray.distill import objective
from xdistil_ray.distill import schedule
from xdistil_ray.config import LossConfig
from xdistil_ray.distill.objective import LossSpec


def test_layer_pairs():
    assert schedule.layer_pairs("last", num_student=4, num_teacher=6) == [(4, 6)]
    assert schedule.layer_pairs("last", num_student=4, num_teacher=6, last_k=2) == [(4, 6), (3, 5)]
    assert schedule.layer_pairs("uniform", num_student=3, num_teacher=6) == [(1, 2), (2, 4), (3, 6)]
    assert schedule.layer_pairs("uniform", num_student=4, num_teacher=12) == [
        (1, 3), (2, 6), (3, 9), (4, 12)]
    assert schedule.layer_pairs("explicit", num_student=4, num_teacher=6,
                                layers=[[0, 0], [-1, -1], [2, 3]]) == [(0, 0), (4, 6), (2, 3)]
    with pytest.raises(ValueError, match="last_k 5 exceeds"):
        schedule.layer_pairs("last", num_student=4, num_teacher=6, last_k=5)
    with pytest.raises(ValueError, match="student layer 5 does not exist"):
        schedule.layer_pairs("explicit", num_student=4, num_teacher=6, layers=[[5, 1]])


def _resolve(*configs, num_student=4):
    return objective.resolve_losses(list(configs), num_student=num_student, num_teacher=6,
                                    student_hidden=128, teacher_hidden=384, teacher_heads=12)


def test_resolve_losses():
    rep, mha = _resolve(LossConfig(type="representation"),
                        LossConfig(type="attention_relations", relation_heads=8, teacher_layer=-2))
    assert rep.pairs == ((4, 6),)
    assert (mha.relation_heads, mha.student_block, mha.teacher_block) == (8, 3, 4)
    with pytest.raises(ValueError, match="relation_heads 12 does not divide the student's width 128"):
        _resolve(LossConfig(type="attention_relations"))  # default: the teacher's 12 heads
    assert objective.projections([rep], 384) == {"loss0_s4_t6": 384}
    with pytest.raises(ValueError, match="attention block"):
        _resolve(LossConfig(type="attention_relations", relation_heads=8, student_layer=0))


def _outputs(b=2, t=3, h=4, c=2, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(b, c, generator=g),
            "hidden_states": tuple(torch.randn(b, t, h, generator=g) for _ in range(layers + 1)),
            "qkv": None}


def test_stored_representation_compares_the_cls_vector_and_weights_sum():
    student = _outputs()
    teacher_cls = torch.randn(2, 4)
    batch = {"attention_mask": torch.ones(2, 3, dtype=torch.long),
             "teacher_hidden": teacher_cls, "teacher_logits": torch.zeros(2, 2)}
    specs = [LossSpec("representation", weight=2.0, pairs=((2, 6),)), LossSpec("logits", weight=0.5)]
    targets = objective.stored_targets(batch, 6)
    total, parts = objective.compute(specs, student, targets, batch,
                                     torch.nn.ModuleDict({"loss0_s2_t6": torch.nn.Identity()}),
                                     per_token=False)
    rep = (student["hidden_states"][2][:, 0] - teacher_cls).pow(2).mean()
    logit = student["logits"].pow(2).mean()
    assert parts["0:representation"].item() == pytest.approx(rep.item(), rel=1e-6)
    assert total.item() == pytest.approx(2.0 * rep.item() + 0.5 * logit.item(), rel=1e-6)


def test_token_representation_covers_every_real_token():
    student = _outputs()
    teacher_states = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    batch = {"attention_mask": mask, "teacher_hidden": teacher_states}
    specs = [LossSpec("representation", pairs=((2, 6),))]
    total, _ = objective.compute(specs, student, objective.stored_targets(batch, 6), batch,
                                 torch.nn.ModuleDict({"loss0_s2_t6": torch.nn.Identity()}),
                                 per_token=True)
    per_token = (student["hidden_states"][2] - teacher_states).pow(2).mean(-1)
    expected = per_token[mask.bool()].mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_parameters_no_loss_reaches_are_identified():
    mha = [LossSpec("attention_relations", relation_heads=4, student_block=2, teacher_block=5)]
    layer = "student.bert.encoder.layer"
    assert objective.reached(f"{layer}.2.attention.self.key.weight", mha)
    assert not objective.reached(f"{layer}.2.attention.output.dense.weight", mha)
    assert not objective.reached(f"{layer}.3.attention.self.key.weight", mha)
    assert objective.reached(f"{layer}.1.output.dense.weight", mha)
    assert objective.reached("student.bert.embeddings.word_embeddings.weight", mha)
    assert not objective.reached("student.classifier.weight", mha)
    assert not objective.reached("student.bert.pooler.dense.weight", mha)
    hs = [LossSpec("hidden_states", pairs=((2, 6),))]
    assert objective.reached(f"{layer}.1.output.dense.weight", hs)
    assert not objective.reached(f"{layer}.2.output.dense.weight", hs)
    assert objective.reached("projections.loss0_s2_t6.weight", hs)
    assert objective.reached(f"{layer}.3.output.dense.weight", [LossSpec("logits")])
