import numpy as np
import torch

from xdistil_ray.modeling import models


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


def test_forward_outputs_capture_qkv_of_the_chosen_block(tiny_classifier_dir):
    model = models.load_classifier(tiny_classifier_dir).eval()
    ids = torch.tensor([[101, 2000, 2001, 102]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    out = models.forward_outputs(model, batch, hidden_states=True, qkv_block=1)
    assert out["logits"].shape == (1, 2) and len(out["hidden_states"]) == 4
    q, k, v = out["qkv"]
    layer = model.bert.encoder.layer[1]
    x = out["hidden_states"][1]  # the block's input
    assert torch.allclose(q, layer.attention.self.query(x), atol=1e-5)
    assert torch.allclose(v, layer.attention.self.value(x), atol=1e-5)
    module = models.DistillModule(model, {"loss0_s3_t6": 96, "loss1_s3_t3": 48})
    assert isinstance(module.projections["loss0_s3_t6"], torch.nn.Linear)
    assert isinstance(module.projections["loss1_s3_t3"], torch.nn.Identity)


def test_student_from_chosen_teacher_layers(tiny_classifier_dir):
    teacher = models.load_classifier(tiny_classifier_dir)
    student = models.build_student(teacher, num_layers=2, hidden_size=48, num_heads=4,
                                   intermediate_size=96, init="teacher", seed=0,
                                   teacher_layers=[1, 3])
    # same width: the teacher's blocks 1 and 3 (1-based) as they are, in its own coordinates
    for s_i, t_i in ((0, 0), (1, 2)):
        s_block, t_block = student.bert.encoder.layer[s_i], teacher.bert.encoder.layer[t_i]
        for (name, s_w), t_w in zip(s_block.state_dict().items(), t_block.state_dict().values()):
            assert torch.equal(s_w, t_w), name


def test_student_of_all_the_teachers_blocks_at_its_width_is_the_teacher(tiny_classifier_dir):
    # A rotation of the teacher's space (the PCA basis) does not commute with LayerNorm: with
    # one, the student's last states were up to 0.55 off the teacher's seen through the same
    # rotation (mean magnitude 0.80).
    teacher = models.load_classifier(tiny_classifier_dir).eval()
    student = models.build_student(teacher, num_layers=3, hidden_size=48, num_heads=4,
                                   intermediate_size=96, init="teacher", seed=0).eval()
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102, 0], [101, 6659, 102, 0, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids > 0).long()}
    with torch.no_grad():
        t, s = (models.forward_outputs(m, batch, hidden_states=True)["hidden_states"][-1]
                for m in (teacher, student))
    assert torch.allclose(s, t, atol=1e-5), (s - t).abs().max()


def test_students_for_each_task(tmp_path, tiny_classifier_dir):
    teacher = models.load_classifier(tiny_classifier_dir)
    plain = models.build_student(teacher.bert, num_layers=1, hidden_size=24, num_heads=2,
                                 intermediate_size=32, init="teacher", seed=0, task="none")
    assert type(plain).__name__ == "BertModel"
    from transformers import BertForTokenClassification

    tagger = BertForTokenClassification.from_pretrained(
        tiny_classifier_dir, num_labels=3, ignore_mismatched_sizes=True,
        id2label={0: "B", 1: "I", 2: "O"})
    token_student = models.build_student(tagger, num_layers=1, hidden_size=24, num_heads=2,
                                         intermediate_size=32, init="random", seed=0, task="token")
    assert type(token_student).__name__ == "BertForTokenClassification"
    assert token_student.config.id2label == {0: "B", 1: "I", 2: "O"}
    token_student.save_pretrained(tmp_path)
    again = models.build_student(tagger, num_layers=9, hidden_size=8, num_heads=1,
                                 intermediate_size=8, init="pretrained", seed=0, task="token",
                                 pretrained=str(tmp_path))
    assert again.config.num_hidden_layers == 1  # the pretrained model's own shape
    assert torch.equal(again.classifier.weight, token_student.classifier.weight)


def test_a_teacher_heads_label_order_is_the_runs(tmp_path, capsys):
    """An MNLI-style head (entailment, neutral, contradiction) is not the sorted order of the
    data's labels: the run takes the head's order, spelled as in the data, so stored logits,
    the student's head and dev scores agree on each index; other names keep the sorted order
    with a warning; a teacher without the head takes the data's order."""
    from transformers import BertConfig, BertForSequenceClassification

    data = ["contradiction", "entailment", "neutral"]
    heads = {"mnli": ["ENTAILMENT", "NEUTRAL", "CONTRADICTION"], "other": ["a", "b", "c"]}
    for name, labels in heads.items():
        config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32, num_labels=3,
                            id2label=dict(enumerate(labels)),
                            label2id={n: i for i, n in enumerate(labels)},
                            architectures=["BertForSequenceClassification"])
        BertForSequenceClassification(config).save_pretrained(tmp_path / name)
    assert models.teacher_label_order(str(tmp_path / "mnli"), data, "pair") == [
        "entailment", "neutral", "contradiction"]
    assert models.teacher_label_order(str(tmp_path / "other"), data, "pair") == data
    assert "warning: the teacher's head names ['a', 'b', 'c']" in capsys.readouterr().out
    assert models.teacher_label_order(str(tmp_path / "mnli"), data[:2], "pair") == data[:2]


def test_save_pretrained_writes_safetensors_and_reads_back(tmp_path, tiny_classifier_dir):
    import warnings

    model = models.load_classifier(tiny_classifier_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an argument transformers no longer takes warns or fails
        models.save_pretrained(model, None, str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json",
                                                                   "model.safetensors"]
    again = models.load_classifier(str(tmp_path / "out"))
    assert torch.equal(again.classifier.weight, model.classifier.weight)
