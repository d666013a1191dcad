"""A training worker's batches: rows padded into tensors (labels per sentence or per token),
the collate function Ray Data's iterator calls, and the endless stream of shuffled batches with
the first epoch kept in memory for the later ones."""

from __future__ import annotations

import threading

import numpy as np
import torch

from xdistil_ray.modeling import outputs
from xdistil_ray.modeling.outputs import IGNORE_LABEL


def _pad(rows: list[np.ndarray], length: int, value, dtype, tail: tuple = ()) -> torch.Tensor:
    out = np.full((len(rows), length) + tail, value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _token_labels(word_ids: list, tags: list, label_index: dict[str, int]) -> np.ndarray:
    """Per-token labels: each word's tag on its first sub-word, IGNORE_LABEL elsewhere."""
    out = np.full(len(word_ids), IGNORE_LABEL, dtype=np.int64)
    previous = -1
    for t, w in enumerate(word_ids):
        if w >= 0 and w != previous:
            out[t] = label_index[str(tags[w])]
        previous = w
    return out


def pad_batch(batch: dict, pad_id: int, label_index: dict[str, int] | None,
              per_token: bool = False) -> dict:
    """Numpy batch of variable-length rows -> padded torch tensors.

    Returns:
        input_ids [B, T] int64, attention_mask [B, T] int64, token_type_ids [B, T] when stored,
        teacher_logits [B, C] / teacher_hidden [B, H] float32 (per token: [B, T, C] / [B, T, H],
        zero-padded), labels [B] int64 (per token: [B, T], IGNORE_LABEL where not counted;
        extractive QA: [B, 2], the gold start and end tokens).
    """
    rows = [np.asarray(r) for r in batch["input_ids"]]
    lengths = [len(r) for r in rows]
    length = max(lengths)
    out = {"input_ids": _pad(rows, length, pad_id, np.int64),
           "attention_mask": _pad([np.ones(n) for n in lengths], length, 0, np.int64)}
    if "token_type_ids" in batch:
        out["token_type_ids"] = _pad(list(batch["token_type_ids"]), length, 0, np.int64)
    for column, key in outputs.STORED_COLUMNS.items():
        if column not in batch:
            continue
        values = [np.asarray(v, dtype=np.float32) for v in batch[column]]
        if per_token:
            width = len(values[0]) // lengths[0]
            values = [v.reshape(n, width) for v, n in zip(values, lengths)]
            out[key] = _pad(values, length, 0.0, np.float32, (width,))
        else:
            out[key] = torch.from_numpy(np.stack(values))
    if "start_position" in batch:
        out["labels"] = torch.from_numpy(np.stack(
            [np.asarray(batch["start_position"]), np.asarray(batch["end_position"])],
            axis=-1).astype(np.int64))
    elif label_index is not None and "tags" in batch:
        labels = [_token_labels(w, t, label_index) for w, t in zip(batch["word_ids"], batch["tags"])]
        out["labels"] = _pad(labels, length, IGNORE_LABEL, np.int64)
    elif label_index is not None and "label" in batch:
        out["labels"] = torch.tensor([label_index[str(v)] for v in batch["label"]])
    return out


class PadCollate:
    """Ray Data collate function: a numpy batch -> :func:`pad_batch`'s tensors (stored top-k
    logits made dense first). Ray runs it in its prefetch threads, beside the training step."""

    def __init__(self, pad_id: int, label_names: list[str], per_token: bool):
        self.pad_id = pad_id
        self.label_index = {name: i for i, name in enumerate(label_names)}
        self.per_token = per_token

    def __call__(self, batch: dict) -> dict:
        batch = outputs.with_dense_logits(batch, len(self.label_index))
        return pad_batch(batch, self.pad_id, self.label_index, self.per_token)


def batches_forever(shard, batch_size: int, seed: int, collate, device, prefetch: int = 2,
                    cache_bytes: int = 0):
    """Full padded batches on ``device`` from a Ray Data shard, epoch after epoch, reshuffled
    each epoch; ``prefetch`` batches are read and collated ahead of the step.

    With ``cache_bytes``, the first epoch's rows are kept on the worker while they fit, and the
    later epochs are cut from them (a full reshuffle of this worker's rows): each epoch of a
    streaming split is a new Ray Data execution (its read tasks, its start-up: 5-15 s on a
    2-CPU machine), which on a small dataset costs more than the epoch's steps.

    Raises:
        RuntimeError: when a whole epoch holds less than one batch (the loop would never end).
    """
    from ray.data.collate_fn import NumpyBatchCollateFn

    cache = _RowCache(cache_bytes)

    class _Collate(NumpyBatchCollateFn):
        def __call__(self, batch):
            cache.add(batch)
            return collate(batch)

    # The first epoch keeps the last partial batch (its rows go to the cache; it is not trained
    # on), so that the cached epochs see every row.
    full = 0
    for batch in shard.iter_torch_batches(
            batch_size=batch_size, collate_fn=_Collate(), device=device, drop_last=False,
            prefetch_batches=prefetch, local_shuffle_buffer_size=batch_size * 8,
            local_shuffle_seed=seed):
        if _batch_rows(batch) == batch_size:
            full += 1
            yield batch
    cache.close_epoch()
    if full == 0:
        raise RuntimeError(f"this worker's data holds less than one batch of {batch_size} "
                           "rows; lower the stage's batch_size or train.num_workers")
    epoch = 1
    while True:
        if cache.complete:
            yield from cache.epoch(batch_size, seed + epoch, collate, device)
        else:
            for batch in shard.iter_torch_batches(
                    batch_size=batch_size, collate_fn=_Collate(), device=device, drop_last=True,
                    prefetch_batches=prefetch, local_shuffle_buffer_size=batch_size * 8,
                    local_shuffle_seed=seed + epoch):
                yield batch
        epoch += 1


def _batch_rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


class _RowCache:
    """A worker's rows of one epoch as column lists, while they fit in ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget, self.size = budget, 0
        self.columns: dict[str, list] | None = {} if budget > 0 else None
        self.complete = False
        self.lock = threading.Lock()  # Ray collates in its prefetch threads

    def add(self, batch: dict) -> None:
        if self.columns is None or self.complete:
            return
        size = sum(_nbytes(v) for v in batch.values())
        with self.lock:
            if self.columns is None or self.size + size > self.budget:
                self.columns = None  # too big: every epoch streams
                return
            self.size += size
            for name, values in batch.items():
                self.columns.setdefault(name, []).extend(list(values))

    def epoch(self, batch_size: int, seed: int, collate, device):
        rows = len(next(iter(self.columns.values())))
        order = np.random.default_rng(seed).permutation(rows)
        for start in range(0, rows - batch_size + 1, batch_size):
            picked = order[start:start + batch_size]
            batch = collate({name: [values[i] for i in picked]
                             for name, values in self.columns.items()})
            yield {k: v.to(device) for k, v in batch.items()}

    def close_epoch(self) -> None:
        """Ends the first epoch: the rows, added in whatever order Ray's prefetch threads
        collated their batches, are put in an order of their content alone, so that the later
        epochs' seeded shuffles are the same in every run (they were not: the same fine-tune
        twice trained its second epoch on other batches, seen 2026-12-07)."""
        if self.columns is None:
            return
        names = sorted(self.columns)
        rows = len(self.columns[names[0]]) if names else 0
        keys = [tuple(np.asarray(self.columns[n][i]).tobytes() for n in names)
                for i in range(rows)]
        order = sorted(range(rows), key=keys.__getitem__)
        self.columns = {n: [values[i] for i in order] for n, values in self.columns.items()}
        self.complete = True


def _nbytes(values) -> int:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.nbytes
    return sum(np.asarray(v).nbytes + 64 for v in values)
