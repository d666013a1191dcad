"""Decoding and cleaning rules for corpus rows, and reject reasons. Pure: no Ray, no I/O.

Every input row ends up either kept (cleaned text) or dropped under exactly one reason, so that
``input_rows == kept + sum(dropped.values())`` holds for any input.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

import numpy as np

# Reasons a row is dropped, in the order they are checked.
INVALID_UTF8 = "invalid_utf8"
NUL_BYTE = "nul_byte"
BAD_JSON = "bad_json"
MISSING_TEXT = "missing_text"
EMPTY = "empty"
WHITESPACE_ONLY = "whitespace_only"
DUPLICATE = "duplicate"
MISSING_LABEL = "missing_label"
UNKNOWN_LABEL = "unknown_label"
TAGS_MISMATCH = "tags_mismatch"
BAD_ROW = "bad_row"
TOO_LONG = "too_long"
"""A JSON line longer than reading keeps (data/step.py max_line_bytes): cut, so not whole."""
"""A .tsv/.csv row whose number of fields differs from its file's first row's."""
REASONS = (INVALID_UTF8, NUL_BYTE, BAD_JSON, BAD_ROW, MISSING_TEXT, EMPTY, WHITESPACE_ONLY,
           DUPLICATE, MISSING_LABEL, UNKNOWN_LABEL, TAGS_MISMATCH)
ROW_REASON = "_reason"
"""Key of a record row that a reader already found bad (a .tsv/.csv row): its reason, or ""."""
PAIR_SEPARATOR = "\x1f"
"""Joins a sentence pair into one text for dedup keys (a control character: never in clean text)."""

_WHITESPACE = re.compile(r"\s+")
# Control characters (Unicode Cc) other than whitespace; format characters (Cf, e.g. the ZWJ in
# emoji sequences) are kept because they carry meaning in several scripts.
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def decode_line(raw: bytes) -> tuple[str | None, str | None]:
    """Decodes one line of a text file.

    Returns:
        (text, None) for a decodable line, (None, reason) otherwise. A trailing ``\\r`` (Windows
        line ending) and a UTF-8 byte-order mark are removed.
    """
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if b"\x00" in raw:
        return None, NUL_BYTE
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, INVALID_UTF8
    return text.lstrip("\ufeff"), None


def text_from_json(line: str, column: str) -> tuple[Any, str | None]:
    """Parses one JSON Lines row and returns (its ``column`` value, None) or (None, reason)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None, BAD_JSON
    if not isinstance(obj, dict):
        return None, BAD_JSON
    value = obj.get(column)
    if not isinstance(value, str):
        return None, MISSING_TEXT
    return obj, None


def clean_text(text: str) -> tuple[str | None, str | None]:
    """Normalizes a sentence: NFC, control characters out, whitespace runs to one space.

    Returns:
        (clean text, None) or (None, EMPTY / WHITESPACE_ONLY / NUL_BYTE).
    """
    if text == "":
        return None, EMPTY
    if "\x00" in text:
        return None, NUL_BYTE
    text = unicodedata.normalize("NFC", text.replace("\ufeff", ""))
    text = _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    if not text:
        return None, WHITESPACE_ONLY
    return text, None


def dedup_key(text: str) -> bytes:
    """16-byte digest of the clean text: equal texts, equal keys; collisions negligible."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def row_id(key: bytes) -> int:
    """Stable signed 64-bit id of a kept row, from its dedup key."""
    return int.from_bytes(key[:8], "little", signed=True)


def is_heldout(key: bytes, fraction: float) -> bool:
    """Deterministic held-out split by text: the same sentence always lands on the same side."""
    return int.from_bytes(key[8:12], "little") < fraction * 2**32


def is_dev(key: bytes, fraction: float) -> bool:
    """Deterministic dev share of a labeled set without one (other key bytes than
    :func:`is_heldout`: the two splits are independent)."""
    return int.from_bytes(key[12:16], "little") < fraction * 2**32


def clean_rows(raw: list, *, source: str, text_column: str, label_column: str | None = None,
               pair_column: str | None = None) -> dict[str, np.ndarray]:
    """Cleans a batch of input rows.

    Args:
        raw: bytes lines (source ``txt`` or ``jsonl``), or str/None values (source ``text``:
            parquet and datasets columns), or dict rows (source ``records``).
        source: how ``raw`` is encoded: ``txt``, ``jsonl``, ``text`` or ``records``.
        text_column: key of the sentence in JSON rows.
        label_column: key of the label in JSON rows, for labeled data.
        pair_column: key of the second sentence, for sentence-pair data.

    Returns:
        Columns ``text`` (clean text or None), ``reason`` ("" for kept rows), with
        ``label_column`` ``label`` (the label as a string, or None), with ``pair_column``
        ``text_pair`` (clean second sentence, or None).
    """
    texts, reasons, labels, pairs = [], [], [], []
    for item in raw:
        text, label, reason, pair = _clean_one(item, source, text_column, label_column, pair_column)
        texts.append(text)
        reasons.append(reason or "")
        labels.append(label)
        pairs.append(pair)
    out = {"text": np.array(texts, dtype=object), "reason": np.array(reasons, dtype=object)}
    if label_column:
        out["label"] = np.array(labels, dtype=object)
    if pair_column:
        out["text_pair"] = np.array(pairs, dtype=object)
    return out


def clean_token_rows(raw: list, *, source: str, words_column: str,
                     tags_column: str) -> dict[str, np.ndarray]:
    """Cleans a batch of token-classification rows (a list of words and one tag per word).

    Words are cleaned like sentences; a word that cleans to nothing is dropped with its tag.

    Returns:
        Columns ``words`` and ``tags`` (lists, or None), ``text`` (the words joined by spaces,
        for dedup keys) and ``reason`` ("" for kept rows).
    """
    out: dict[str, list] = {"words": [], "tags": [], "text": [], "reason": []}
    for item in raw:
        words, tags, reason = _clean_token_row(item, source, words_column, tags_column)
        out["words"].append(words)
        out["tags"].append(tags)
        out["text"].append(" ".join(words) if words else None)
        out["reason"].append(reason or "")
    return {k: np.array(v, dtype=object) for k, v in out.items()}


def _clean_token_row(item: Any, source: str, words_column: str, tags_column: str):
    if source == "jsonl":
        line, reason = decode_line(bytes(item))
        if reason:
            return None, None, reason
        if not line.strip():
            return None, None, EMPTY if line == "" else WHITESPACE_ONLY
        try:
            item = json.loads(line)
        except ValueError:
            return None, None, BAD_JSON
    if not isinstance(item, dict):
        return None, None, BAD_JSON
    words, tags = item.get(words_column), item.get(tags_column)
    if not _is_list(words) or not all(isinstance(w, str) for w in words):
        return None, None, MISSING_TEXT
    if not _is_list(tags) or any(t is None or isinstance(t, (dict, list, float)) for t in tags):
        return None, None, MISSING_LABEL
    if len(tags) != len(words):
        return None, None, TAGS_MISMATCH
    kept = [(c, str(t)) for c, t in ((clean_text(w)[0], t) for w, t in zip(words, tags)) if c]
    if not kept:
        return None, None, EMPTY
    return [w for w, _ in kept], [t for _, t in kept], None


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _clean_one(item: Any, source: str, text_column: str, label_column: str | None,
               pair_column: str | None):
    """(text, label, reason, text_pair) of one row."""
    obj: Any = None
    if source in ("txt", "jsonl"):
        item, reason = decode_line(bytes(item))
        if reason:
            return None, None, reason, None
    if source == "jsonl":
        if not item.strip():
            return None, None, EMPTY if item == "" else WHITESPACE_ONLY, None
        obj, reason = text_from_json(item, text_column)
        if reason:
            return None, None, reason, None
        item = obj[text_column]
    elif source == "records":
        obj = item if isinstance(item, dict) else {}
        if obj.get(ROW_REASON):
            return None, None, obj[ROW_REASON], None
        item = obj.get(text_column)
    if not isinstance(item, str):
        return None, None, MISSING_TEXT, None
    text, reason = clean_text(item)
    if reason:
        return None, None, reason, None
    pair = None
    if pair_column:
        value = obj.get(pair_column) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            return None, None, MISSING_TEXT, None
        pair, reason = clean_text(value)
        if reason:
            return None, None, reason, None
    label = None
    if label_column:
        value = obj.get(label_column) if isinstance(obj, dict) else None
        if value is None or isinstance(value, (dict, list, float)):
            return None, None, MISSING_LABEL, None
        label = str(value)
    return text, label, None, pair


def object_array(items: list) -> np.ndarray:
    """A 1-D object array of ``items`` (np.array would stack equal-length lists into 2-D)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def clip_chars(text: str, max_chars: int) -> tuple[str, bool]:
    """Clips text to ``max_chars`` characters; returns (text, was_clipped)."""
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars], True


def truncate_ids(ids: list[int], max_length: int, special_ids: set[int]) -> tuple[list[int], bool]:
    """Truncates token ids to ``max_length``, keeping a closing special token (e.g. [SEP]).

    Returns:
        (ids, was_truncated).
    """
    if len(ids) <= max_length:
        return ids, False
    if ids and ids[-1] in special_ids:
        return ids[: max_length - 1] + [ids[-1]], True
    return ids[:max_length], True
