"""Every supported teacher family, on tiny random models built offline: the student's shape and
initialization, the inputs each family takes, where each loss finds its parts, and every
transfer loss falling over a few steps."""

import numpy as np
import pytest
import torch

from xdistil_ray.modeling import families
from xdistil_ray.modeling import models
from xdistil_ray.distill import objective
from xdistil_ray.distill import schedule
from xdistil_ray.config import LossConfig

VOCAB = 30522  # the MiniLM tokenizer's, so a tiny teacher can be run on real text too
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
              intermediate_size=128, max_position_embeddings=128, pad_token_id=0)
STUDENT = dict(num_layers=2, hidden_size=48, num_heads=3, intermediate_size=64)  # head size 16


def tiny_config(kind: str, num_labels: int = 2):
    import transformers as tf

    deberta = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=32,
                   max_relative_positions=-1, norm_rel_ebd="layer_norm",
                   position_biased_input=False, type_vocab_size=0)
    config = {
        "bert": lambda: tf.BertConfig(**COMMON),
        "roberta": lambda: tf.RobertaConfig(**COMMON),
        "xlm-roberta": lambda: tf.XLMRobertaConfig(**COMMON),
        "electra": lambda: tf.ElectraConfig(**COMMON, embedding_size=32),
        "deberta-v3": lambda: tf.DebertaV2Config(**COMMON, **deberta, share_att_key=True),
        "deberta-v2": lambda: tf.DebertaV2Config(**COMMON, **deberta, share_att_key=False),
        "distilbert": lambda: tf.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=4, n_heads=4,
                                                  hidden_dim=128, max_position_embeddings=128,
                                                  pad_token_id=0),
        "modernbert": lambda: tf.ModernBertConfig(**COMMON, bos_token_id=101, eos_token_id=102,
                                                  cls_token_id=101, sep_token_id=102,
                                                  global_attn_every_n_layers=2,
                                                  local_attention=16),
    }[kind]()
    config.num_labels = num_labels
    config.id2label = {i: f"label{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    return config


KINDS = ["bert", "roberta", "xlm-roberta", "electra", "deberta-v3", "deberta-v2", "distilbert",
         "modernbert"]


def tiny_teacher(kind: str, task: str = "sentence"):
    torch.manual_seed(0)
    return models.auto_class(task).from_config(tiny_config(kind)).eval()


def batch(rows: int = 6, length: int = 12, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 8000, (rows, length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    for i in range(rows):  # some padding in every other row
        if i % 2:
            cut = length - 3 - i % 4
            ids[i, cut - 1], ids[i, cut:], mask[i, cut:] = 102, 0, 0
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask,
            "labels": torch.arange(rows) % 2}


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA between two sets of vectors [N, *]: 1 for the same space up to rotation and
    scale, whatever the widths."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a.T @ b).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm()))


def real_tokens(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return states[mask.bool()]


@pytest.mark.parametrize("kind", KINDS)
def test_student_is_the_teachers_architecture_at_the_students_shape(kind):
    teacher = tiny_teacher(kind)
    student = models.build_student(teacher, **STUDENT, init="teacher", seed=0)
    assert type(student) is type(teacher)
    family = families.family_of(teacher.config)
    s = family.anatomy(student)
    assert len(s.blocks) == 2
    assert all(b.attn_out.out_features == 48 and b.ffn_out.in_features == 64 for b in s.blocks)
    assert student.config.num_attention_heads == 3
    if kind == "modernbert":  # each block's local/global attention is its source block's
        assert student.config.layer_types == [teacher.config.layer_types[i]
                                              for i in models.teacher_layer_map(4, 2)]
    if kind == "electra":  # narrower embeddings stay, with a projection to the student's width
        assert s.word_embeddings.embedding_dim == 32
        assert s.embedding_projection.in_features == 32
        assert s.embedding_projection.out_features == 48
    else:
        assert s.word_embeddings.embedding_dim == 48 and s.embedding_projection is None
    assert models.num_params(student) < models.num_params(teacher)
    # half the blocks at three quarters of the width (and 64 of 128 feed-forward units)
    encoder = {kind: sum(p.numel() for b in families.family_of(m.config).anatomy(m).blocks
                         for mod in (b.attn_out, b.ffn_in, b.ffn_out, *b.qkv_modules())
                         for p in mod.parameters())
               for kind, m in (("student", student), ("teacher", teacher))}
    assert encoder["student"] < 0.3 * encoder["teacher"], encoder


@pytest.mark.parametrize("kind", KINDS)
def test_initialized_student_is_closer_to_the_teacher_than_a_random_one(kind):
    """Last-layer states over real tokens, compared by linear CKA (width-free)."""
    teacher = tiny_teacher(kind)
    b = batch()
    with torch.no_grad():
        t = models.forward_outputs(teacher, b, hidden_states=True)["hidden_states"][-1]
        scores = {}
        for init in ("teacher", "random"):
            student = models.build_student(teacher, **STUDENT, init=init, seed=0).eval()
            s = models.forward_outputs(student, b, hidden_states=True)["hidden_states"][-1]
            scores[init] = linear_cka(real_tokens(s, b["attention_mask"]),
                                      real_tokens(t, b["attention_mask"]))
    # Measured over 3 batches x seeds: teacher-initialized 0.94-0.998, random 0.54-0.83, the
    # smallest gap 0.13 (BERT-like); each family's spread across seeds is 0.01-0.05.
    assert scores["teacher"] > scores["random"] + 0.1, scores


def test_electra_student_narrower_than_the_teachers_embeddings_drops_the_projection():
    teacher = tiny_teacher("electra")
    student = models.build_student(teacher, num_layers=2, hidden_size=32, num_heads=2,
                                   intermediate_size=64, init="teacher", seed=0)
    s = families.family_of(student.config).anatomy(student)
    assert s.embedding_projection is None and s.word_embeddings.embedding_dim == 32
    # Tables through the teacher's projection and the width projection at once: close to the
    # teacher still (CKA 0.91-0.92 over 3 seeds, a random student 0.60-0.63).
    b = batch()
    random = models.build_student(teacher, num_layers=2, hidden_size=32, num_heads=2,
                                  intermediate_size=64, init="random", seed=0)
    with torch.no_grad():
        t = models.forward_outputs(teacher, b, hidden_states=True)["hidden_states"][-1]
        cka = [linear_cka(real_tokens(models.forward_outputs(m.eval(), b, hidden_states=True)
                                      ["hidden_states"][-1], b["attention_mask"]),
                          real_tokens(t, b["attention_mask"])) for m in (student, random)]
    assert cka[0] > cka[1] + 0.1, cka


@pytest.mark.parametrize("kind", KINDS)
def test_forward_outputs_give_queries_keys_values_and_drop_inputs_a_family_lacks(kind):
    teacher = tiny_teacher(kind)
    b = batch()  # with token_type_ids, which DistilBERT and ModernBERT do not take
    out = models.forward_outputs(teacher, b, hidden_states=True, qkv_block=1)
    assert len(out["hidden_states"]) == 5 and out["logits"].shape == (6, 2)
    q, k, v = out["qkv"]
    assert q.shape == k.shape == v.shape == (6, 12, 64)
    assert not torch.allclose(q, k)


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_is_in_its_unfreezing_group(kind):
    student = models.build_student(tiny_teacher(kind), **STUDENT, init="teacher", seed=0)
    anatomy = families.family_of(student.config).anatomy(student)
    groups = {}
    for name, param in student.named_parameters():
        groups.setdefault(schedule.group_of(name), set()).add(id(param))
    assert {"embeddings", "block0", "block1"} <= set(groups)
    for i, block in enumerate(anatomy.blocks):
        for module in (block.attn_out, block.ffn_in, block.ffn_out, *block.qkv_modules()):
            assert id(module.weight) in groups[f"block{i}"], (kind, i)
    assert id(anatomy.word_embeddings.weight) in groups["embeddings"]
    if anatomy.embedding_projection is not None:
        assert id(anatomy.embedding_projection.weight) in groups["embeddings"]


LOSSES = [LossConfig(type="representation"),
          LossConfig(type="hidden_states", layer_map="uniform"),
          LossConfig(type="attention_relations", relation_heads=4),
          LossConfig(type="logits"), LossConfig(type="labels")]


@pytest.mark.parametrize("kind", KINDS)
def test_every_transfer_loss_falls_for_the_family(kind):
    """Each loss alone, from a random student (the teacher-initialized one starts close)."""
    for name, _ in tiny_teacher(kind).named_parameters():  # Q/K/V named as objective expects
        if any(q in name for q in objective._QKV):
            break
    else:
        raise AssertionError(f"{kind}: no query/key/value parameter named as objective expects")
    teacher = tiny_teacher(kind)
    b = batch()
    for config in LOSSES:
        specs = objective.resolve_losses([config], num_student=2, num_teacher=4,
                                         student_hidden=48, teacher_hidden=64, teacher_heads=4)
        student = models.build_student(teacher, **STUDENT, init="random", seed=0)
        module = models.DistillModule(student, objective.projections(specs, 64)).train()
        targets = objective.OnlineTeacher(teacher, specs, torch.device("cpu"))(b)
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        history = []
        for _ in range(10):
            out = module(b, hidden_states=True, qkv_block=objective.qkv_block(specs, "student"))
            loss, _ = objective.compute(specs, out, targets, b, module.projections,
                                        per_token=False)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(float(loss))
        assert all(torch.isfinite(torch.tensor(history))), (kind, config.type, history)
        assert history[-1] < history[0], (kind, config.type, history)


@pytest.mark.parametrize("task", ["token", "none"])
@pytest.mark.parametrize("kind", ["electra", "deberta-v3", "distilbert", "modernbert"])
def test_students_for_token_and_plain_encoder_tasks(kind, task):
    teacher = tiny_teacher(kind, task)
    student = models.build_student(teacher, **STUDENT, init="teacher", seed=0, task=task)
    assert type(student) is type(teacher)
    out = models.forward_outputs(student, batch(), hidden_states=True)
    if task == "token":
        assert out["logits"].shape == (6, 12, 2)
    else:
        assert out["logits"] is None


def test_an_unsupported_architecture_is_named():
    from transformers import GPT2Config

    with pytest.raises(families.UnsupportedFamily, match="'gpt2' is not supported; supported: "
                                                         "bert, roberta"):
        families.family_of(GPT2Config())


@pytest.mark.parametrize("kind", KINDS)
def test_exported_student_loads_with_auto_classes_and_a_pipeline(kind, tmp_path, teacher_path):
    """The student folder as export writes it, read back by transformers alone, with the
    teacher's tokenizer (here MiniLM's: every tiny family uses its vocabulary)."""
    from transformers import AutoModelForSequenceClassification, pipeline

    student = models.build_student(tiny_teacher(kind), **STUDENT, init="teacher", seed=0).eval()
    folder = str(tmp_path / "student")
    models.save_pretrained(student, models.load_tokenizer(teacher_path), folder)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert type(loaded) is type(student)
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(models.forward_outputs(loaded, b)["logits"],
                                   models.forward_outputs(student, b)["logits"])
    out = pipeline("text-classification", model=folder, tokenizer=folder)("The battery is great")
    assert out[0]["label"] in ("label0", "label1")


@pytest.mark.parametrize("architecture", ["roberta", "electra", "deberta-v2", "distilbert",
                                          "modernbert"])
def test_a_random_student_of_another_family_on_the_teachers_vocabulary(architecture):
    """student.architecture with init: random: the named family at the student's shape, with
    the teacher's vocabulary, padding id and labels; it trains on the same batches."""
    teacher = tiny_teacher("bert")
    student = models.build_student(teacher, **STUDENT, init="random", seed=0,
                                   architecture=architecture)
    assert student.config.model_type == architecture
    assert families.shape_of(student.config) == {
        "num_hidden_layers": 2, "hidden_size": 48, "num_attention_heads": 3,
        "intermediate_size": 64}
    anatomy = families.family_of(student.config).anatomy(student)
    assert anatomy.word_embeddings.num_embeddings == VOCAB
    assert student.config.pad_token_id == 0 and student.config.id2label == teacher.config.id2label
    b = batch()
    out = models.forward_outputs(student, b, hidden_states=True, qkv_block=1)
    assert out["logits"].shape == (6, 2) and len(out["qkv"]) == 3
    with pytest.raises(ValueError, match="init: teacher needs the teacher's own"):
        models.build_student(teacher, **STUDENT, init="teacher", seed=0, architecture=architecture)


def save_xlmr_teacher(folder: str, head: bool = True) -> str:
    """An XLM-R-style teacher in ``folder``: a Unigram (SentencePiece-like) vocabulary trained
    here with `tokenizers` on generated reviews, <s> <pad> </s> <unk> ids 0-3 as XLM-R has them,
    and a tiny XLM-R (a 2-label classifier with ``head``, else the bare encoder) on it."""
    import random

    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import models as tm
    from tokenizers import trainers
    from transformers import (PreTrainedTokenizerFast, XLMRobertaConfig,
                              XLMRobertaForSequenceClassification, XLMRobertaModel)

    from xdistil_ray.data.embedded_reviews import review

    rng = random.Random(0)
    tok = Tokenizer(tm.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([review(rng, i % 2 == 0) for i in range(2000)], trainers.UnigramTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                   sep_token="</s>", mask_token="<mask>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=4,
                              num_attention_heads=4, intermediate_size=128, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, max_position_embeddings=66,
                              type_vocab_size=1, num_labels=2)
    (XLMRobertaForSequenceClassification if head else XLMRobertaModel)(config).save_pretrained(
        folder)
    return folder


@pytest.fixture(scope="module")
def xlmr_teacher_dir(tmp_path_factory) -> str:
    return save_xlmr_teacher(str(tmp_path_factory.mktemp("xlmr")))


def test_an_xlmr_teacher_with_a_unigram_vocabulary_runs_the_data_teacher_and_student_paths(
        xlmr_teacher_dir):
    """The data step's tokenization, teacher inference and the student on a vocabulary that is
    not BERT's WordPiece: other special tokens, padding id 1, RoBERTa-style positions."""
    import pandas as pd

    from xdistil_ray.tasks import corpus
    from xdistil_ray.modeling.batches import pad_batch
    from xdistil_ray.data.step import TextSettings, tokenize_batch
    from xdistil_ray.teacher.step import TeacherInference

    texts = ["the battery is great", "the screen broke after a week " * 8]
    rows = pd.DataFrame({"text": texts, "text_pair": ["the reviewer is happy", "it broke"],
                         "key": [corpus.dedup_key(t) for t in texts]})
    settings = TextSettings(xlmr_teacher_dir, max_length=32, max_chars=1000, heldout_fraction=0.1)
    table = tokenize_batch(rows, settings=settings).to_pydict()
    ids = table["input_ids"]
    assert all(r[0] == 0 and r[-1] == 2 for r in ids) and table["truncated"] == [False, True]
    assert len(ids[1]) == 32 and ids[0].count(2) == 3  # <s> A </s> </s> B </s>
    assert 3 not in ids[0]  # the vocabulary covers the reviews: no <unk>
    inference = TeacherInference(xlmr_teacher_dir, ("logits", "hidden"), device="cpu")
    assert inference.pad_id == 1
    out = inference({"input_ids": np.array([np.array(r) for r in ids], dtype=object),
                     "token_type_ids": np.array([np.array(t) for t in table["token_type_ids"]],
                                                dtype=object)})
    assert out["logits"].shape == (2, 2) and np.isfinite(out["logits"]).all()
    teacher = models.load_model(xlmr_teacher_dir).eval()
    student = models.build_student(teacher, **STUDENT, init="teacher", seed=0).eval()
    assert student.config.pad_token_id == 1
    b = pad_batch({"input_ids": [np.array(r) for r in ids]}, 1, None)
    with torch.no_grad():
        alone = [models.forward_outputs(student, pad_batch({"input_ids": [np.array(r)]}, 1, None))
                 ["logits"][0] for r in ids]
        padded = models.forward_outputs(student, b)["logits"]
    torch.testing.assert_close(padded, torch.stack(alone), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["electra", "deberta-v3"])
def test_a_teacher_head_of_another_size_is_replaced_for_the_task(kind, tmp_path, capsys):
    """An SST-2-style 2-label teacher brought to a 4-label task: transformers 5 refused to load
    it ("You set ignore_mismatched_sizes to False"); the head is replaced, the encoder kept, and
    the console line names both label sets."""
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(kind, num_labels=2)
    config.id2label, config.label2id = {0: "negative", 1: "positive"}, {"negative": 0,
                                                                         "positive": 1}
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(config)
    teacher.save_pretrained(tmp_path)
    labels = ["1 star", "2 stars", "3 stars", "4 stars"]
    model = models.load_model(str(tmp_path), "sentence", labels)
    assert model.config.num_labels == 4 and list(model.config.id2label.values()) == labels
    logits = model(**{k: v for k, v in batch().items() if k != "token_type_ids"}).logits
    assert logits.shape[-1] == 4
    kept = dict(teacher.base_model.named_parameters())
    for name, p in model.base_model.named_parameters():
        assert torch.equal(p, kept[name]), name  # the encoder is the teacher's
    line = models.replaced_head(str(tmp_path), labels, "sentence")
    assert "head has 2 labels (negative, positive), the labeled data 4 (1 star" in line
    assert models.replaced_head(str(tmp_path), ["negative", "positive"], "sentence") is None
