from collections import Counter

import pytest

from xdistil_ray.tasks import corpus


def _clean_txt(lines: list[bytes]) -> tuple[list, Counter]:
    out = corpus.clean_rows(lines, source="txt", text_column="text")
    kept = [t for t in out["text"] if t is not None]
    return kept, Counter(r for r in out["reason"] if r)


def test_each_bad_kind_counted_exactly():
    lines = [
        b"A good sentence.",
        b"",                                  # empty
        b"   \t  ",                           # whitespace only
        b"\xe3\x80\x80\xc2\xa0",              # ideographic space + NBSP: whitespace only
        b"windows line\r",                    # CRLF: kept, \r removed
        b"bad \xff\xfe byte",                 # invalid UTF-8
        b"nul\x00inside",                     # NUL byte
        "Привет, мир".encode(),               # Cyrillic
        "你好，世界".encode(),                  # CJK
        "مرحبا بالعالم".encode(),             # Arabic
        "family 👨‍👩‍👧 emoji".encode(),          # emoji with ZWJ
        b"\xef\xbb\xbfwith BOM",              # UTF-8 byte-order mark
        b"x" * 1_000_000,                     # 1 MB line: kept (truncated later)
    ]
    kept, dropped = _clean_txt(lines)
    assert dropped == {"empty": 1, "whitespace_only": 2, "invalid_utf8": 1, "nul_byte": 1}
    assert len(kept) + sum(dropped.values()) == len(lines)
    assert kept[0] == "A good sentence."
    assert "windows line" in kept
    assert "Привет, мир" in kept and "你好，世界" in kept and "مرحبا بالعالم" in kept
    assert "family 👨‍👩‍👧 emoji" in kept  # the ZWJ sequence survives
    assert "with BOM" in kept
    assert len(kept[-1]) == 1_000_000


def test_whitespace_collapsed_and_controls_removed():
    assert corpus.clean_text("  a\t\tb \n c\x07d  ") == ("a b c d", None)
    assert corpus.clean_text("e\u0301") == ("\u00e9", None)  # NFC


def test_jsonl_rows():
    lines = [b'{"text": "ok row"}', b'{"text": 3}', b'{"other": "x"}', b"{not json", b"[1, 2]",
             b"", b'{"text": "   "}']
    out = corpus.clean_rows(lines, source="jsonl", text_column="text")
    assert list(out["text"]) == ["ok row"] + [None] * 6
    assert list(out["reason"]) == ["", "missing_text", "missing_text", "bad_json", "bad_json",
                                   "empty", "whitespace_only"]


def test_labeled_rows_need_a_label():
    lines = [b'{"text": "a", "label": "pos"}', b'{"text": "b"}', b'{"text": "c", "label": 1}']
    out = corpus.clean_rows(lines, source="jsonl", text_column="text", label_column="label")
    assert list(out["label"]) == ["pos", None, "1"]
    assert list(out["reason"]) == ["", "missing_label", ""]


def test_records_from_parquet_columns():
    rows = [{"text": "fine"}, {"text": None}, {"text": ""}]
    out = corpus.clean_rows(rows, source="records", text_column="text")
    assert list(out["reason"]) == ["", "missing_text", "empty"]


def test_dedup_key_and_split_are_deterministic():
    a, b = corpus.dedup_key("same text"), corpus.dedup_key("same text")
    assert a == b and len(a) == 16 and corpus.dedup_key("other") != a
    assert corpus.row_id(a) == corpus.row_id(b)
    share = sum(corpus.is_heldout(corpus.dedup_key(str(i)), 0.1) for i in range(5000)) / 5000
    assert 0.08 < share < 0.12


@pytest.mark.parametrize("ids, expected, cut", [
    ([101, 5, 6, 102], [101, 5, 6, 102], False),
    ([101, 5, 6, 7, 8, 102], [101, 5, 6, 102], True),
    ([5, 6, 7, 8, 9], [5, 6, 7, 8], True),
])
def test_truncate_keeps_closing_special_token(ids, expected, cut):
    assert corpus.truncate_ids(ids, 4, {101, 102}) == (expected, cut)


def test_clip_chars():
    assert corpus.clip_chars("abcdef", 4) == ("abcd", True)
    assert corpus.clip_chars("ab", 4) == ("ab", False)
