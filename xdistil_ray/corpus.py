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
REASONS = (INVALID_UTF8, NUL_BYTE, BAD_JSON, MISSING_TEXT, EMPTY, WHITESPACE_ONLY, DUPLICATE,
           MISSING_LABEL, UNKNOWN_LABEL)

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


def clean_rows(raw: list, *, source: str, text_column: str,
               label_column: str | None = None) -> dict[str, np.ndarray]:
    """Cleans a batch of input rows.

    Args:
        raw: bytes lines (source ``txt`` or ``jsonl``), or str/None values (source ``text``:
            parquet and datasets columns), or dict rows (source ``records``).
        source: how ``raw`` is encoded: ``txt``, ``jsonl``, ``text`` or ``records``.
        text_column: key of the sentence in JSON rows.
        label_column: key of the label in JSON rows, for labeled data.

    Returns:
        Columns ``text`` (clean text or None), ``reason`` ("" for kept rows) and, with
        ``label_column``, ``label`` (the label as a string, or None).
    """
    texts, reasons, labels = [], [], []
    for item in raw:
        text, label, reason = _clean_one(item, source, text_column, label_column)
        texts.append(text)
        reasons.append(reason or "")
        labels.append(label)
    out = {"text": np.array(texts, dtype=object), "reason": np.array(reasons, dtype=object)}
    if label_column:
        out["label"] = np.array(labels, dtype=object)
    return out


def _clean_one(item: Any, source: str, text_column: str, label_column: str | None):
    obj: Any = None
    if source in ("txt", "jsonl"):
        item, reason = decode_line(bytes(item))
        if reason:
            return None, None, reason
    if source == "jsonl":
        if not item.strip():
            return None, None, EMPTY if item == "" else WHITESPACE_ONLY
        obj, reason = text_from_json(item, text_column)
        if reason:
            return None, None, reason
        item = obj[text_column]
    elif source == "records":
        obj = item if isinstance(item, dict) else {}
        item = obj.get(text_column)
    if not isinstance(item, str):
        return None, None, MISSING_TEXT
    text, reason = clean_text(item)
    if reason:
        return None, None, reason
    label = None
    if label_column:
        value = obj.get(label_column) if isinstance(obj, dict) else None
        if value is None or isinstance(value, (dict, list, float)):
            return None, None, MISSING_LABEL
        label = str(value)
    return text, label, None


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
