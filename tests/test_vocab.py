"""A student vocabulary trimmed to the data (student.vocab: data): the trimmed tokenizer
tokenizes the data as the teacher's does, the trimmed student computes what the untrimmed one
does on it, the ids the pipeline stores are mapped for the student, and tokenizers that cannot
be trimmed this way are refused before work."""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_families import save_xlmr_teacher, tiny_config, tiny_teacher

from xdistil_ray.config import load_config
from xdistil_ray.data.embedded_reviews import review
from xdistil_ray.errors import ConfigError
from xdistil_ray.modeling import models
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.modeling import vocab_map
from xdistil_ray.student import vocab

WORDPIECE_FAMILIES = ["bert", "electra", "distilbert"]
"""The tiny families on the MiniLM WordPiece vocabulary (see test_families.VOCAB)."""


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [review(rng, i % 2 == 0) for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer(teacher_path):
    return models.load_tokenizer(teacher_path)


@pytest.fixture(scope="module")
def trimmed(tokenizer, tmp_path_factory):
    """Trimmed to 400 generated reviews."""
    texts = corpus(400, 0)
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for row in tokenizer(texts)["input_ids"]:
        counts += np.bincount(row, minlength=len(tokenizer))
    kept = vocab.kept_ids(counts, tokenizer)
    folder = str(tmp_path_factory.mktemp("trimmed_tokenizer"))
    student_tok = vocab.trimmed_tokenizer(tokenizer, kept, folder)
    return texts, kept, student_tok, folder


def test_the_trimmed_tokenizer_tokenizes_its_data_as_the_teachers(tokenizer, trimmed):
    texts, kept, student_tok, _ = trimmed
    assert len(student_tok) == len(kept) < len(tokenizer) // 10
    table = vocab_map.id_table(kept, len(tokenizer), student_tok.unk_token_id)
    c = vocab.compare(tokenizer, student_tok, table, texts)
    assert c.rows == 400 and c.rows_differ == 0 and c.tokens_outside == 0
    pairs_t = tokenizer(texts[:50], texts[50:100])
    pairs_s = student_tok(texts[:50], texts[50:100])
    for t, s in zip(pairs_t["input_ids"], pairs_s["input_ids"]):  # special tokens renumbered
        assert table[np.asarray(t)].tolist() == s
    assert pairs_t["token_type_ids"] == pairs_s["token_type_ids"]
    for name in ("pad", "unk", "cls", "sep", "mask"):
        theirs = getattr(tokenizer, f"{name}_token_id")
        assert kept[getattr(student_tok, f"{name}_token_id")] == theirs, name


def test_words_the_data_never_showed_split_into_characters_not_unknown(tokenizer, trimmed):
    _, kept, student_tok, _ = trimmed
    table = vocab_map.id_table(kept, len(tokenizer), student_tok.unk_token_id)
    c = vocab.compare(tokenizer, student_tok, table, ["The xylophone recital was sublime."])
    assert c.rows_differ == 1 and c.tokens_outside >= 2  # xylophone, recital, sublime
    assert c.unknown_student == c.unknown_teacher == 0
    assert student_tok.tokenize("xylophone") == ["x", "##y", "##l", "##o", "##p", "##h", "##o",
                                                  "##n", "##e"]


def test_the_trimmed_tokenizer_folder_loads_with_auto_classes(trimmed):
    from transformers import AutoTokenizer

    texts, _, student_tok, folder = trimmed
    again = AutoTokenizer.from_pretrained(folder)
    assert type(again) is type(student_tok) and len(again) == len(student_tok)
    assert again(texts[:20])["input_ids"] == student_tok(texts[:20])["input_ids"]
    assert again.decode(again("The battery lasts.")["input_ids"], skip_special_tokens=True) == \
        "the battery lasts."


@pytest.mark.parametrize("kind", WORDPIECE_FAMILIES)
def test_a_trimmed_student_computes_what_the_untrimmed_one_does_on_its_data(kind, tokenizer,
                                                                            trimmed):
    data, kept, student_tok, _ = trimmed
    teacher = tiny_teacher(kind)
    student = models.build_student(teacher, num_layers=2, hidden_size=32, num_heads=2,
                                   intermediate_size=64, init="teacher", seed=0)
    full = models.build_student(teacher, num_layers=2, hidden_size=32, num_heads=2,
                                intermediate_size=64, init="teacher", seed=0).eval()
    vocab.trim_embeddings(student, kept)
    student.eval()
    assert student.config.vocab_size == len(kept)
    assert torch.equal(student.get_input_embeddings().weight,
                       full.get_input_embeddings().weight[torch.tensor(kept)])
    assert models.num_params(full) - models.num_params(student) == \
        (len(tokenizer) - len(kept)) * student.get_input_embeddings().embedding_dim
    texts = data[:8]
    theirs = tokenizer(texts, padding=True, return_tensors="pt")
    ours = student_tok(texts, padding=True, return_tensors="pt")
    table = torch.as_tensor(vocab_map.id_table(kept, len(tokenizer), student_tok.unk_token_id))
    assert torch.equal(table[theirs["input_ids"]], ours["input_ids"])
    keys = ["input_ids", "attention_mask"]
    with torch.no_grad():
        a = full(**{k: theirs[k] for k in keys}).logits
        b = student(**{k: ours[k] for k in keys}).logits
    torch.testing.assert_close(a, b)


def test_the_distill_module_maps_the_teachers_ids_for_a_trimmed_student(tokenizer, trimmed):
    texts, kept, student_tok, _ = trimmed
    teacher = tiny_teacher("bert")
    student = models.build_student(teacher, num_layers=2, hidden_size=32, num_heads=2,
                                   intermediate_size=64, init="teacher", seed=0)
    vocab.trim_embeddings(student, kept)
    student.eval()
    table = vocab_map.id_table(kept, len(tokenizer), student_tok.unk_token_id)
    module = models.DistillModule(student, {}, table)
    assert "id_table" not in module.state_dict()  # checkpoints hold the student's weights only
    theirs = tokenizer(texts[:4], padding=True, return_tensors="pt")
    ours = student_tok(texts[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = module(dict(theirs), hidden_states=False, qkv_block=None)
        direct = models.forward_outputs(student, dict(ours), hidden_states=False, qkv_block=None)
    torch.testing.assert_close(out["logits"], direct["logits"])
    rows = vocab_map.mapped_rows({"input_ids": [np.asarray(r) for r in tokenizer(texts[:3])["input_ids"]],
                              "label": ["a", "b", "c"]}, table)
    assert [r.tolist() for r in rows["input_ids"]] == student_tok(texts[:3])["input_ids"]
    assert rows["label"] == ["a", "b", "c"]
    assert vocab_map.mapped_rows(rows, None) is rows


def test_ids_are_counted_on_the_rows_not_held_out(tmp_path, tokenizer):
    run = RunFolder(str(tmp_path / "run"))
    ids = [[101, 2023, 102], [101, 2023, 2003, 102], [101, 7592, 102]]
    table = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())),
                      "heldout": [False, False, True], "text": ["a", "b", "c"],
                      "truncated": [False, True, False]})
    (tmp_path / "run").mkdir(exist_ok=True)
    pq.write_table(table, str(tmp_path / "run" / "part.parquet"))
    counts, rows = vocab.count_ids(run, [run.path("part.parquet")], len(tokenizer))
    assert rows == 2 and counts[2023] == 2 and counts[2003] == 1 and counts[7592] == 0
    assert counts[101] == 2
    assert vocab.read_texts(run, [run.path("part.parquet")], False, 10) == ["a"]  # not truncated
    assert vocab.read_texts(run, [run.path("part.parquet")], True, 10) == ["c"]
    assert vocab.read_texts(run, [run.path("part.parquet")], None, 10, False) == ["a", "b", "c"]


def test_tokenizers_that_cannot_be_trimmed_are_refused_before_work(tmp_path, teacher_path):
    """A Unigram (XLM-R) and a byte-level BPE (RoBERTa, ModernBERT) teacher: refused by the
    config checks, naming the tokenizer; the WordPiece teacher passes."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tm
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    from xdistil_ray.pipelines.inputs import check_models

    cfg = load_config(overrides=["student.vocab=data"])
    check_models(cfg, teacher_path)
    xlmr = save_xlmr_teacher(str(tmp_path / "xlmr"), head=False)
    with pytest.raises(ConfigError, match="student.vocab: .*Unigram tokenizer"):
        check_models(cfg, xlmr)
    bpe = Tokenizer(tm.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus(300, 2), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    folder = str(tmp_path / "roberta")
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                   sep_token="</s>", mask_token="<mask>")
    fast.save_pretrained(folder)
    RobertaModel(RobertaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, pad_token_id=1,
                               max_position_embeddings=66)).save_pretrained(folder)
    with pytest.raises(ConfigError, match="'roberta'.*BPE tokenizer"):
        check_models(cfg, folder)
    with pytest.raises(ConfigError, match="student.vocab: must be"):
        load_config(overrides=["student.vocab=trimmed"])


def test_a_bpe_vocabulary_would_not_reproduce_the_data():
    """Why BPE is refused: trimmed to the tokens its output uses (and the merges among them),
    a BPE tokenizer loses the intermediate tokens its merges build those through."""
    import json

    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tm

    bpe = Tokenizer(tm.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(corpus(300, 2), trainers.BpeTrainer(vocab_size=400,
                                                                special_tokens=["<unk>"]))
    texts = corpus(50, 3)
    used = {t for text in texts for t in bpe.encode(text).tokens}
    spec = json.loads(bpe.to_str())["model"]
    kept = {t: i for i, t in enumerate(sorted(used | {"<unk>"}))}
    merges = [m for m in spec["merges"]
              if all(p in kept for p in m) and "".join(m) in kept]
    assert len(kept) < len(spec["vocab"])
    trimmed = Tokenizer(tm.BPE(vocab=kept, merges=[tuple(m) for m in merges], unk_token="<unk>"))
    trimmed.pre_tokenizer = pre_tokenizers.Whitespace()
    assert any(trimmed.encode(t).tokens != bpe.encode(t).tokens for t in texts)


def test_a_trimmed_student_exports_to_onnx_with_its_tokenizer(tmp_path, tokenizer, trimmed):
    """The exported folder (weights, trimmed tokenizer, ONNX copies) answers as the student."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xdistil_ray.export import onnx_model

    texts, kept, student_tok, _ = trimmed
    student = models.build_student(tiny_teacher("bert"), num_layers=2, hidden_size=32,
                                   num_heads=2, intermediate_size=64, init="teacher", seed=0)
    vocab.trim_embeddings(student, kept)
    folder = str(tmp_path / "student")
    models.save_pretrained(student, student_tok, folder)
    onnx_model.export(student, f"{folder}/{onnx_model.FOLDER}", "sentence", opset=17)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert loaded.config.vocab_size == len(tok) == len(kept)
    batch = tok(texts[:4], padding=True, return_tensors="np")
    session = onnx_model.Session(f"{folder}/{onnx_model.FOLDER}/"
                                 f"{onnx_model.VARIANTS['fp32']}", 1)
    preds = onnx_model.predictions(session, [{k: batch[k] for k in ("input_ids",
                                                                  "attention_mask",
                                                                  "token_type_ids")}])
    with torch.no_grad():
        logits = loaded(**{k: torch.as_tensor(v) for k, v in batch.items()}).logits
    np.testing.assert_allclose(np.stack(preds), logits.numpy(), atol=1e-4)
    assert tiny_config("bert").vocab_size == len(tokenizer)


def test_the_report_and_the_card_say_what_was_kept_and_how_it_tokenizes_other_text():
    from xdistil_ray.report import model_card
    from xdistil_ray.report import step as report_step

    c = {"rows": 200, "rows_differ": 0, "tokens": 4000, "tokens_outside": 0,
         "unknown_teacher": 0, "unknown_student": 0}
    v = {"kept": 6012, "teacher_size": 30522, "seen": 4018, "transfer_rows": 9000,
         "labeled_rows": 1000, "params_before": 4_782_722, "params_after": 2_424_386,
         "checks": {"transfer": c, "heldout": {**c, "rows_differ": 30, "tokens_outside": 40},
                    "dev": {**c, "rows": 0}}}
    text = "\n".join(report_step._vocab_lines(v))
    assert "keeps 6,012 of the teacher's 30,522 tokens" in text
    assert "4,782,722 -> 2,424,386 parameters" in text
    assert "| transfer set | 200 | 0.00% | 0.00% | 0 / 0 |" in text
    assert "| held-out transfer | 200 | 15.00% | 1.00% | 0 / 0 |" in text
    assert "labeled dev" not in text  # none compared
    card = "\n".join(model_card._vocab_lines(v))
    assert "6,012 of 30,522 tokens" in card and "1.00% of the teacher's tokens" in card
    assert report_step._vocab_lines({}) == model_card._vocab_lines(None) == []
