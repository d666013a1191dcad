import numpy as np
import torch

from xdistil_ray import models


def test_layer_map_is_uniform_and_ends_at_top():
    assert models.teacher_layer_map(6, 3) == [1, 3, 5]
    assert models.teacher_layer_map(12, 4) == [2, 5, 8, 11]
    assert models.teacher_layer_map(6, 6) == [0, 1, 2, 3, 4, 5]


def test_embedding_projection_is_orthonormal_and_keeps_most_variance():
    torch.manual_seed(0)
    emb = torch.randn(500, 8) @ torch.diag(torch.tensor([10.0, 5, 1, 1, 0.1, 0.1, 0.1, 0.1]))
    p = models.embedding_projection(emb, 3)
    assert p.shape == (8, 3)
    assert torch.allclose(p.T @ p, torch.eye(3), atol=1e-5)
    centered = emb - emb.mean(0)
    kept = (centered @ p).pow(2).sum() / centered.pow(2).sum()
    assert kept > 0.95


def test_student_from_teacher_is_small_and_close_to_teacher(tiny_classifier_dir):
    teacher = models.load_classifier(tiny_classifier_dir).eval()
    student = models.build_student(teacher, num_layers=2, hidden_size=24, num_heads=2,
                                   intermediate_size=64, init="teacher", seed=0).eval()
    assert student.config.hidden_size == 24 and student.config.num_hidden_layers == 2
    assert models.num_params(student) < models.num_params(teacher)
    p = models.embedding_projection(teacher.bert.embeddings.word_embeddings.weight, 24)
    expected = teacher.bert.embeddings.word_embeddings.weight @ p
    assert torch.allclose(student.bert.embeddings.word_embeddings.weight, expected, atol=1e-6)
    # the kept attention heads are the teacher's own (head size 12 in both)
    t_q = (teacher.bert.encoder.layer[2].attention.self.query.weight @ p).detach()
    s_q = student.bert.encoder.layer[1].attention.self.query.weight
    rows = {tuple(np.round(r.numpy(), 5)) for r in t_q}
    assert all(tuple(np.round(r.numpy(), 5)) in rows for r in s_q.detach())
    random_student = models.build_student(teacher, num_layers=2, hidden_size=24, num_heads=2,
                                          intermediate_size=64, init="random", seed=0)
    assert not torch.allclose(random_student.bert.embeddings.word_embeddings.weight,
                              student.bert.embeddings.word_embeddings.weight)


def test_has_task_head(tiny_classifier_dir, teacher_path):
    assert models.has_task_head(tiny_classifier_dir, 2)
    assert not models.has_task_head(tiny_classifier_dir, 3)
    assert not models.has_task_head(teacher_path, 2)  # a plain encoder


def test_distill_module_projects_cls(tiny_classifier_dir):
    module = models.DistillModule(models.load_classifier(tiny_classifier_dir), teacher_hidden=96)
    ids = torch.tensor([[101, 2000, 102, 0]])
    logits, cls = module(ids, (ids != 0).long())
    assert logits.shape == (1, 2) and cls.shape == (1, 96)
    logits, cls = models.DistillModule(models.load_classifier(tiny_classifier_dir), None)(ids, (ids != 0).long())
    assert cls is None
