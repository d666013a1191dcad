"""Benchmark: a student vocabulary trimmed to its transfer set (``student.vocab: data``) on real
English text, against the teacher's whole vocabulary measured in the same run.

    .venv/bin/python benchmarks/vocab_trim.py [--sizes 1000 10000 60000] [--heldout 2000]

The text: the prose of every installed Python package (its description in ``METADATA`` and
the docstrings of its files) and of the standard library's modules, written by many authors,
split into sentences. Packages are split in two, so that the held-out sentences come from packages the
transfer set never read (other words, not only other sentences). For each transfer-set size
the teacher's tokenizer (all-MiniLM-L6-v2, the embedded teacher: uncased WordPiece, 30,522
tokens) is trimmed as :mod:`xdistil_ray.student.vocab` trims it; printed: the tokens kept, the
parameters of an L4-H128 and an L2-H64 student (ratio to the untrimmed one), and on the
held-out sentences the share tokenized otherwise, the share of the teacher's tokens the trimmed
vocabulary lacks, and unknown tokens. Last, the transfer set itself: tokenized otherwise must
be 0.
"""

from __future__ import annotations

import argparse
import email
import glob
import os
import random
import re
import sys
import tempfile

import numpy as np

import _common

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _prose(text: str) -> list[str]:
    """Sentences of prose in ``text`` (code, tables, links and markup lines left out)."""
    text = " ".join(line.strip() for line in text.splitlines()
                    if line.strip() and not re.match(r"^(\s*[|`<>#=*\-+$:.]|\s{4}|\S+\s*:\s*$)",
                                                     line))
    return [s for s in SENTENCE.split(text)
            if 30 <= len(s) <= 300 and not re.search(r"https?://|[{}\[\]_=()]{2}|`", s)
            and sum(c.isalpha() or c == " " for c in s) > 0.9 * len(s)]


def _docstrings(path: str) -> list[str]:
    import ast

    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    return [d for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            for d in [ast.get_docstring(node)] if d]


def sentences_by_package(limit_files: int) -> dict[str, list[str]]:
    """Prose sentences by package: each installed distribution's description (``METADATA``)
    and the docstrings of its Python files (up to ``limit_files`` per package), and the
    standard library's modules."""
    import sysconfig

    site = os.path.dirname(os.path.dirname(np.__file__))
    out: dict[str, list[str]] = {}
    for path in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            body = email.message_from_string(f.read()).get_payload()
        name = os.path.basename(os.path.dirname(path)).split("-")[0].lower()
        if isinstance(body, str):
            out.setdefault(name, []).extend(_prose(body))
    roots = [(os.path.basename(d).lower(), d) for d in sorted(glob.glob(os.path.join(site, "*")))
             if os.path.isdir(d) and not d.endswith((".dist-info", "__pycache__"))]
    stdlib = sysconfig.get_paths()["stdlib"]
    roots += [(f"stdlib-{os.path.splitext(os.path.basename(p))[0]}", p)
              for p in sorted(glob.glob(os.path.join(stdlib, "*")))
              if p.endswith(".py") or (os.path.isdir(p) and "site-packages" not in p)]
    for name, root in roots:
        files = [root] if root.endswith(".py") else sorted(
            glob.glob(os.path.join(root, "**", "*.py"), recursive=True))[:limit_files]
        for path in files:
            for doc in _docstrings(path):
                out.setdefault(name, []).extend(_prose(doc))
    return {name: list(dict.fromkeys(found)) for name, found in out.items() if found}


def student_params(layers: int, hidden: int, vocab_size: int) -> int:
    from transformers import AutoConfig

    from xdistil_ray.config import load_config
    from xdistil_ray.modeling.models import resolve_teacher_path
    from xdistil_ray.pipelines.capacity import student_params as estimate

    teacher = AutoConfig.from_pretrained(resolve_teacher_path("embedded"))
    cfg = load_config(overrides=[f"student.num_layers={layers}", f"student.hidden_size={hidden}",
                                 f"student.num_heads={max(1, hidden // 32)}",
                                 f"student.intermediate_size={4 * hidden}"])
    return estimate(cfg, teacher) - (teacher.vocab_size - vocab_size) * hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 60000])
    parser.add_argument("--heldout", type=int, default=5000)
    parser.add_argument("--files-per-package", type=int, default=400)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from xdistil_ray.modeling.models import load_tokenizer, resolve_teacher_path
    from xdistil_ray.student import vocab

    print(_common.machine())
    packages = sentences_by_package(args.files_per_package)
    names = sorted(packages)
    random.Random(0).shuffle(names)
    heldout_names, transfer_names = names[: len(names) // 4], names[len(names) // 4:]
    pool = list(dict.fromkeys(s for n in transfer_names for s in packages[n]))
    seen = set(pool)
    heldout = list(dict.fromkeys(s for n in heldout_names for s in packages[n] if s not in seen))
    random.Random(1).shuffle(heldout)
    heldout = heldout[: args.heldout]
    random.Random(2).shuffle(pool)
    print(f"{len(names)} packages: transfer sentences from {len(transfer_names)} "
          f"({len(pool):,} sentences), held-out from the other {len(heldout_names)} "
          f"({len(heldout):,} sentences)")
    teacher = load_tokenizer(resolve_teacher_path("embedded"))
    full = len(teacher)
    base4, base2 = student_params(4, 128, full), student_params(2, 64, full)
    print(f"untrimmed: {full:,} tokens; L4-H128 {base4 / 1e6:.2f}M, L2-H64 {base2 / 1e6:.2f}M "
          "parameters")
    print("| transfer sentences | tokens kept | L4-H128 params (x untrimmed) | L2-H64 params "
          "(x untrimmed) | held-out tokenized otherwise | held-out tokens outside | held-out "
          "[UNK] teacher / trimmed | transfer set tokenized otherwise |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        transfer = pool[:size]
        if len(transfer) < size:
            print(f"(only {len(transfer):,} transfer sentences: --sizes {size} runs on them)",
                  file=sys.stderr)
        counts = np.zeros(full, dtype=np.int64)
        for start in range(0, len(transfer), 1000):
            for row in teacher(transfer[start:start + 1000])["input_ids"]:
                counts += np.bincount(row, minlength=full)
        kept = vocab.kept_ids(counts, teacher)
        with tempfile.TemporaryDirectory() as tmp:
            trimmed = vocab.trimmed_tokenizer(teacher, kept, tmp)
        table = vocab.id_table(kept, full, trimmed.unk_token_id)
        h = vocab.compare(teacher, trimmed, table, heldout)
        t = vocab.compare(teacher, trimmed, table, transfer)
        p4, p2 = student_params(4, 128, len(kept)), student_params(2, 64, len(kept))
        print(f"| {len(transfer):,} | {len(kept):,} | {p4 / 1e6:.2f}M ({p4 / base4:.2f}x) | "
              f"{p2 / 1e6:.2f}M ({p2 / base2:.2f}x) | {h.rows_differ / h.rows:.1%} | "
              f"{h.tokens_outside / h.tokens:.2%} | {h.unknown_teacher} / {h.unknown_student} | "
              f"{t.rows_differ / t.rows:.2%} |")


if __name__ == "__main__":
    main()
