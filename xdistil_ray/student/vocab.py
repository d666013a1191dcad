"""A student vocabulary trimmed to the data (``student.vocab: data``).

In a small student the word table is most of the model (the embedded default's 4 x 128
student: 3.9M of its 4.8M parameters are the 30,522 x 128 table). The trimmed student keeps
the teacher's tokens that the transfer set and the labeled training rows use, its special
tokens and its single-character pieces (``a``, ``##a``, ...: a word the data never showed
splits into them rather than becoming unknown); its word table is the teacher-initialized
table cut to those rows, and its tokenizer is the teacher's rebuilt on them.

Exact on the data: WordPiece takes the longest piece of its vocabulary at each position of a
word; every piece the teacher's tokenizer took on a sentence of the data is kept, and a longer
one was not in the teacher's vocabulary either, so the trimmed tokenizer takes the same pieces
(the ids renumbered, the order kept). BPE (RoBERTa, ModernBERT) merges through intermediate
tokens the output never shows, and a Unigram vocabulary (XLM-R, DeBERTa-v3) picks the best
segmentation by score, where a straddled cut changes it: those are refused before work.

The pipeline keeps the data step's ids (the teacher's): the stages map them through
:func:`~xdistil_ray.modeling.vocab_map.id_table` in
:class:`~xdistil_ray.modeling.models.DistillModule`, and the eval maps
the stored rows the same way (a token outside the kept ones becomes unknown there, where the
trimmed tokenizer would split it into smaller pieces: :func:`compare` measures how often that
happens on held-out text).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from xdistil_ray.modeling.vocab_map import id_table

TRIMMABLE = ("WordPiece",)
"""Tokenizer models whose trimmed vocabulary tokenizes the data as the full one does."""


def tokenizer_model(tokenizer) -> str:
    """The fast tokenizer's model type (``WordPiece``, ``BPE``, ``Unigram``, ...)."""
    return json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]


def refusal(tokenizer, model_type: str) -> str | None:
    """Why a teacher's tokenizer cannot be trimmed (None: it can)."""
    kind = tokenizer_model(tokenizer)
    if kind in TRIMMABLE:
        return None
    return (f"student.vocab: data trims WordPiece vocabularies (BERT, mBERT, ELECTRA, DistilBERT);"
            f" the teacher ({model_type!r}) has a {kind} tokenizer, which a trimmed vocabulary "
            "would not reproduce on the data (BPE merges through tokens its output never shows; "
            "Unigram picks segmentations by score): use student.vocab: teacher")


def count_ids(run, files: list[str], size: int, columns=("input_ids",)) -> tuple[np.ndarray, int]:
    """How often each id occurs in the non-held-out rows of committed parquet ``files``
    (column by column, file by file: nothing grows with rows); returns (counts, rows)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts, rows = np.zeros(size, dtype=np.int64), 0
    for path in files:
        with run.fs.open_input_file(path) as f:
            names = set(pq.read_schema(f).names)
            table = pq.read_table(f, columns=[c for c in (*columns, "heldout") if c in names])
        if "heldout" in names:
            table = table.filter(pc.invert(table.column("heldout")))
        rows += table.num_rows
        for column in columns:
            if column in names:
                ids = pc.list_flatten(table.column(column)).to_numpy(zero_copy_only=False)
                counts += np.bincount(ids.astype(np.int64), minlength=size)[:size]
    return counts, rows


def single_characters(tokenizer) -> list[int]:
    """Ids of the pieces of one character (``a`` and ``##a``)."""
    prefix = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get(
        "continuing_subword_prefix", "##")
    return [i for token, i in tokenizer.get_vocab().items()
            if len(token) == 1 or (token.startswith(prefix) and len(token) == len(prefix) + 1)]


def kept_ids(counts: np.ndarray, tokenizer) -> list[int]:
    """The teacher ids the student keeps, ascending: seen in the data, special (every added
    token), or a single character."""
    keep = set(np.flatnonzero(counts).tolist())
    keep |= set(tokenizer.all_special_ids) | {int(i) for i in tokenizer.added_tokens_decoder}
    keep |= set(single_characters(tokenizer))
    return sorted(keep)


def trimmed_tokenizer(tokenizer, kept: list[int], folder: str):
    """The teacher's tokenizer on ``kept`` ids only (renumbered 0..n-1 in the teacher's order),
    saved to ``folder`` and loaded back from it (the Auto class of the teacher's)."""
    from transformers import AutoTokenizer

    new_id = {old: new for new, old in enumerate(kept)}
    tokenizer.save_pretrained(folder)
    path = os.path.join(folder, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {token: new_id[i] for token, i in vocab.items() if i in new_id}
    for added in spec.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    _renumber_post_processor(spec.get("post_processor"), new_id)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    vocab_txt = os.path.join(folder, "vocab.txt")
    if os.path.exists(vocab_txt):  # a slow tokenizer's copy: keep it in step
        by_new = {i: token for token, i in spec["model"]["vocab"].items()}
        with open(vocab_txt, "w", encoding="utf-8") as f:
            f.writelines(by_new[i] + "\n" for i in range(len(kept)))
    return AutoTokenizer.from_pretrained(folder)


def _renumber_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    if not processor:
        return
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("cls", "sep"):  # BertProcessing / RobertaProcessing: [token, id]
        if isinstance(processor.get(key), list):
            processor[key][1] = new_id[processor[key][1]]
    for inner in processor.get("processors") or []:
        _renumber_post_processor(inner, new_id)


def trim_embeddings(model, kept: list[int]) -> None:
    """Cuts the model's word table to the ``kept`` rows (in that order) and renumbers the token
    ids its config names."""
    import torch
    from torch import nn

    old = model.get_input_embeddings()
    rows = torch.as_tensor(kept, dtype=torch.long)
    new_id = {k: i for i, k in enumerate(kept)}
    pad = model.config.pad_token_id
    table = nn.Embedding(len(kept), old.embedding_dim,
                         padding_idx=new_id.get(pad) if pad is not None else None)
    with torch.no_grad():
        table.weight.copy_(old.weight[rows])
    model.set_input_embeddings(table)
    model.config.vocab_size = len(kept)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            setattr(model.config, name, new_id.get(value))


@dataclass
class Comparison:
    """The trimmed tokenizer against the teacher's on some sentences."""

    rows: int = 0
    rows_differ: int = 0
    """Sentences the trimmed tokenizer tokenizes otherwise than the teacher's (ids mapped)."""
    tokens: int = 0
    """The teacher's tokens on these sentences."""
    tokens_outside: int = 0
    """... of which the trimmed vocabulary lacks."""
    unknown_teacher: int = 0
    unknown_student: int = 0
    """Unknown tokens in each tokenization."""

    def add(self, other: "Comparison") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def compare(teacher_tok, student_tok, table: np.ndarray, texts: list[str],
            batch: int = 512) -> Comparison:
    """Tokenizes ``texts`` with both tokenizers and counts where they differ."""
    out = Comparison()
    unk_t, unk_s = teacher_tok.unk_token_id, student_tok.unk_token_id
    for start in range(0, len(texts), batch):
        part = list(texts[start:start + batch])
        theirs = teacher_tok(part, add_special_tokens=False)["input_ids"]
        ours = student_tok(part, add_special_tokens=False)["input_ids"]
        for t, s in zip(theirs, ours):
            t = np.asarray(t, dtype=np.int64)
            mapped = table[t]
            out.rows += 1
            out.rows_differ += int(len(s) != len(t) or not np.array_equal(mapped, s))
            out.tokens += len(t)
            out.tokens_outside += int(np.count_nonzero((mapped == unk_s) & (t != unk_t)))
            out.unknown_teacher += int(np.count_nonzero(t == unk_t))
            out.unknown_student += int(np.count_nonzero(np.asarray(s) == unk_s))
    return out


def read_texts(run, files: list[str], heldout: bool | None, limit: int,
               skip_truncated: bool = True) -> list[str]:
    """Up to ``limit`` texts of committed parquet ``files``: their held-out rows (``heldout``
    True), the others (False) or all (None); truncated rows left out (their stored ids end
    before the text does)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: list[str] = []
    for path in files:
        if len(out) >= limit:
            break
        with run.fs.open_input_file(path) as f:
            names = set(pq.read_schema(f).names)
            if "text" not in names:
                continue
            table = pq.read_table(f, columns=[c for c in ("text", "heldout", "truncated")
                                              if c in names])
        if heldout is not None and "heldout" in names:
            keep = table.column("heldout")
            table = table.filter(keep if heldout else pc.invert(keep))
        if skip_truncated and "truncated" in names:
            table = table.filter(pc.invert(table.column("truncated")))
        out += table.column("text").to_pylist()[:limit - len(out)]
    return out


CHECK_ROWS = 20_000
"""Sentences of each kind (transfer set, held-out, dev) the trimmed tokenizer is compared on."""


def trim(run, model, teacher_tok, *, transfer: list[str], labeled: list[str], dev: list[str],
         folder: str, check_rows: int = CHECK_ROWS) -> tuple[object, dict]:
    """Trims ``model`` (built on the teacher's vocabulary) to the tokens of the ``transfer``
    set's and the ``labeled`` training rows' committed files; writes the trimmed tokenizer to
    ``folder``. Returns (tokenizer, what the init marker keeps: the kept teacher ids and the
    comparisons on the transfer set, its held-out rows and the ``dev`` rows)."""
    size = max(len(teacher_tok), model.config.vocab_size)
    counts, rows = count_ids(run, list(transfer), size)
    labeled_counts, labeled_rows = count_ids(run, list(labeled), size)
    kept = kept_ids(counts + labeled_counts, teacher_tok)
    student_tok = trimmed_tokenizer(teacher_tok, kept, folder)
    table = id_table(kept, size, student_tok.unk_token_id)
    teacher_params = sum(p.numel() for p in model.parameters())
    trim_embeddings(model, kept)
    checks = {}
    for name, files, heldout in (("transfer", transfer, False), ("heldout", transfer, True),
                                 ("dev", dev, None)):
        texts = read_texts(run, list(files), heldout, check_rows)
        checks[name] = vars(compare(teacher_tok, student_tok, table, texts))
    return student_tok, {
        "teacher_ids": kept, "teacher_size": size, "unknown": student_tok.unk_token_id,
        "kept": len(kept), "seen": int(np.count_nonzero(counts + labeled_counts)),
        "transfer_rows": rows, "labeled_rows": labeled_rows,
        "params_before": teacher_params, "params_after": sum(p.numel() for p in model.parameters()),
        "checks": checks}
