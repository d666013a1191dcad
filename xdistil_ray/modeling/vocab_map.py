"""A student with a trimmed vocabulary (:mod:`xdistil_ray.student.vocab`) reads rows stored with
the teacher's ids: the table that maps them to its own, and rows mapped through it."""

from __future__ import annotations

import numpy as np


def id_table(teacher_ids: list[int], teacher_size: int, unknown: int) -> np.ndarray:
    """Teacher id -> student id (``unknown`` for a token the student lacks)."""
    table = np.full(max(teacher_size, max(teacher_ids) + 1), unknown, dtype=np.int64)
    table[np.asarray(teacher_ids, dtype=np.int64)] = np.arange(len(teacher_ids))
    return table


def mapped_rows(rows: dict, table: np.ndarray | None) -> dict:
    """``rows`` (stored with the teacher's ids) with the student's ids."""
    if table is None:
        return rows
    return {**rows, "input_ids": [table[np.asarray(r, dtype=np.int64)] for r in rows["input_ids"]]}


def table_of(info: dict | None) -> np.ndarray | None:
    """The id table of an init marker's ``vocab`` (None: the teacher's vocabulary)."""
    if not info or not info.get("teacher_ids"):
        return None
    return id_table(info["teacher_ids"], info["teacher_size"], info["unknown"])
