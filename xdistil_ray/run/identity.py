"""What an input is, beyond its path: a corpus or teacher replaced at the same path must not
pass for the one a step was computed from.

Each input's identity is a short digest over its files: path, size and, for local files, a hash
of their content while the first :data:`HASH_LIMIT` bytes of the input last (the labeled sets,
a teacher's config and tokenizer, a small corpus: well under a second), else their modification
time; for S3, the modification time in the store's listing (one listing per prefix). The digests join the steps' fingerprints
(``corpus.path.content``, ``labeled.train.content``, ``labeled.dev.content``,
``teacher.model.content``), so a replaced input is refused like any other change.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

if TYPE_CHECKING:  # a type only: the run layer sits below the data layer that reads corpora
    from xdistil_ray.data.readers import CorpusSource

HASH_LIMIT = 64 * 2**20
CONTENT = "content"
"""The fingerprint key suffix: ``<config field>.content``."""


def _local_entries(root: str, budget: list[int] | None = None) -> list[tuple[str, int, str]]:
    """(name, size, content hash or mtime) of the files at ``root``; content is hashed while
    ``budget`` (bytes, shared across calls) lasts."""
    budget = budget if budget is not None else [HASH_LIMIT]
    paths = ([root] if os.path.isfile(root) else
             sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names))
    out = []
    for path in paths:
        if os.path.basename(path).startswith("."):
            continue
        st = os.stat(path)
        if st.st_size <= budget[0]:
            budget[0] -= st.st_size
            h = hashlib.sha1()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            mark = "sha1:" + h.hexdigest()
        else:
            mark = f"mtime:{st.st_mtime_ns}"
        out.append((os.path.relpath(path, root) if path != root else "", st.st_size, mark))
    return out


def _remote_entries(fs, paths: list[str]) -> list[tuple[str, int, str]]:
    out = []
    for root in paths:
        info = fs.get_file_info(root)
        infos = ([info] if info.type == pafs.FileType.File else
                 fs.get_file_info(pafs.FileSelector(root, recursive=True)))
        for i in sorted(infos, key=lambda i: i.path):
            if i.type == pafs.FileType.File:
                mtime = i.mtime.timestamp() if i.mtime is not None else ""
                out.append((posixpath.relpath(i.path, root) if i.path != root else i.path,
                            i.size, f"mtime:{mtime}"))
    return out


def digest(entries: list[tuple[str, int, str]]) -> str:
    h = hashlib.sha1()
    for name, size, mark in entries:
        h.update(f"{name}\0{size}\0{mark}\n".encode())
    return f"{len(entries)} files, {sum(e[1] for e in entries)} bytes, {h.hexdigest()[:16]}"


def of_source(source: CorpusSource | None, value: str) -> str:
    """The identity of a resolved input (``value``: the config's value, used as is for the
    embedded data, which the seed decides, and for a hub id, which is read by name)."""
    if source is None or value == "embedded":
        return value
    if source.kind == "hf_hub":
        return (digest(_local_entries(source.path)) if os.path.isdir(source.path)
                else f"hub:{source.path}")
    if source.fs is not None and not isinstance(source.fs, pafs.LocalFileSystem):
        return digest(_remote_entries(source.fs, list(source.files)))
    entries, budget = [], [HASH_LIMIT]
    root = source.path if os.path.isdir(source.path) else os.path.dirname(source.path)
    for path in source.files:  # named below the input's root: its identity is not its path
        base = os.path.relpath(path, root) if root and path.startswith(root) else \
            os.path.basename(path)
        entries += [(posixpath.join(base, n) if n else base, s, m)
                    for n, s, m in _local_entries(path, budget)]
    return digest(entries)


def of_folder(path: str) -> str:
    """The identity of a local model folder (a teacher); a hub id is its own identity."""
    return digest(_local_entries(path)) if os.path.isdir(path) else path


def of_model(value: str, local_path: str, options) -> str:
    """The identity of a model to fine-tune: an ``s3://`` folder by its listing (its local copy
    is new each run), a local folder by its files, a hub id by its name."""
    from xdistil_ray.run import storage

    if storage.is_remote(value):
        fs, root = storage.filesystem(value.rstrip("/"), options)
        return digest(_remote_entries(fs, [root]))
    return of_folder(local_path)


def of_inputs(cfg, inputs) -> dict[str, str]:
    """The fingerprint entries of a run's inputs (:class:`xdistil_ray.pipelines.distill.Inputs`)."""
    out = {f"teacher.model.{CONTENT}": ("embedded" if cfg.teacher.model == "embedded"
                                         else of_folder(inputs.teacher_path))}
    if cfg.corpus.path:  # the embedded corpus is itself (None in a dry run, not generated)
        out[f"corpus.path.{CONTENT}"] = of_source(inputs.corpus, cfg.corpus.path)
    for split, source in inputs.labeled.items():
        out[f"labeled.{split}.{CONTENT}"] = of_source(source, getattr(cfg.labeled, split))
    return out
