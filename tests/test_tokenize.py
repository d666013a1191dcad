"""Tokenization of the three row shapes: sentences, sentence pairs, and words with tags."""

import numpy as np
import pandas as pd

from xdistil_ray.tasks import corpus
from xdistil_ray.data.step import TextSettings, tokenize_batch


def _settings(teacher_path, max_length=64):
    return TextSettings(teacher_path, max_length=max_length, max_chars=1000, heldout_fraction=0.1)


def _rows(**columns):
    n = len(next(iter(columns.values())))
    keys = [corpus.dedup_key(str(i)) for i in range(n)]
    return pd.DataFrame({**columns, "key": keys})


def test_pairs_get_token_types_and_longest_first_truncation(teacher_path):
    batch = _rows(text=["the battery is great", "word " * 50],
                  text_pair=["the reviewer is satisfied", "short claim"])
    table = tokenize_batch(batch, settings=_settings(teacher_path, max_length=16)).to_pydict()
    ids, types = table["input_ids"], table["token_type_ids"]
    assert len(ids[0]) == len(types[0]) and types[0][0] == 0 and types[0][-1] == 1
    assert ids[0].count(102) == 2  # [SEP] after each sentence
    assert len(ids[1]) == 16 and table["truncated"] == [False, True]
    assert types[1].count(1) == 3  # "short claim [SEP]" kept whole: the long first one was cut


def test_words_map_every_token_to_its_word(teacher_path):
    batch = _rows(text=["unbelievably sturdy phone"], words=[["unbelievably", "sturdy", "phone"]],
                  tags=[["O", "B-OPINION", "B-PRODUCT"]])
    table = tokenize_batch(batch, settings=_settings(teacher_path)).to_pydict()
    word_ids = table["word_ids"][0]
    assert word_ids[0] == -1 and word_ids[-1] == -1
    assert sorted(set(word_ids) - {-1}) == [0, 1, 2]
    assert len(word_ids) == len(table["input_ids"][0]) > 5  # "unbelievably" is several pieces
    assert table["tags"][0] == ["O", "B-OPINION", "B-PRODUCT"]


def test_truncated_words_keep_the_closing_special_token(teacher_path):
    words = ["alpha"] * 40
    batch = _rows(text=[" ".join(words)], words=[words], tags=[["O"] * 40])
    table = tokenize_batch(batch, settings=_settings(teacher_path, max_length=10)).to_pydict()
    assert table["input_ids"][0][-1] == 102 and table["word_ids"][0][-1] == -1
    assert table["word_ids"][0][1:-1] == list(range(8)) and table["truncated"] == [True]


def test_token_rows_are_cleaned_with_their_tags():
    rows = [{"w": ["a", " ", "b"], "t": ["B", "O", "I"]}, {"w": ["a"], "t": ["B", "O"]},
            {"w": "a b", "t": ["B"]}, {"w": ["a"], "t": None}, {"w": [" "], "t": ["O"]}]
    out = corpus.clean_token_rows(rows, source="records", words_column="w", tags_column="t")
    assert list(out["reason"]) == ["", "tags_mismatch", "missing_text", "missing_label", "empty"]
    assert out["words"][0] == ["a", "b"] and out["tags"][0] == ["B", "I"]
    assert np.all(out["text"][1:] == None)  # noqa: E711


def test_pair_rows_need_both_sentences():
    rows = [b'{"a": "x", "b": "y"}', b'{"a": "x"}', b'{"a": "x", "b": "  "}']
    out = corpus.clean_rows(rows, source="jsonl", text_column="a", pair_column="b")
    assert list(out["reason"]) == ["", "missing_text", "whitespace_only"]
    assert out["text_pair"][0] == "y"


def _sentencepiece_like_tokenizer(folder) -> str:
    """An XLM-R-like tokenizer (Unigram, metaspace, <s> </s>, no token types), trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["Привет, это отзыв о телефоне", "这是一个评论 关于 电话", "هذا تعليق على الهاتف",
             "the battery is great", "la batería es excelente"] * 20
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>", unk_token="<unk>",
                            model_input_names=["input_ids", "attention_mask"]).save_pretrained(folder)
    return str(folder)


def test_any_script_with_a_sentencepiece_tokenizer(tmp_path):
    path = _sentencepiece_like_tokenizer(tmp_path)
    words = [["Привет", "телефоне"], ["这是一个评论", "电话"], ["هذا", "الهاتف"]]
    batch = _rows(text=[" ".join(w) for w in words], words=words, tags=[["B", "O"]] * 3)
    table = tokenize_batch(batch, settings=_settings(path)).to_pydict()
    for ids, word_ids in zip(table["input_ids"], table["word_ids"]):
        assert ids[0] == 0 and ids[-1] == 2 and len(ids) == len(word_ids)
        assert sorted(set(word_ids) - {-1}) == [0, 1]
    pairs = _rows(text=["Привет, это отзыв"], text_pair=["هذا تعليق"])
    table = tokenize_batch(pairs, settings=_settings(path)).to_pydict()
    assert table["input_ids"][0].count(2) == 3  # <s> A </s> </s> B </s>
    assert set(table["token_type_ids"][0]) == {0}  # no token types: zeros, as XLM-R expects
