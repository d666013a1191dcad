"""Teacher outputs per shard, committed as they finish: the shard ledger (a small Ray actor),
the datasink that writes each block's rows as parts of its shard, and the commit that checks a
shard holds one row per input row.

Nothing here imports torch or transformers: the ledger's actor and the write tasks run in
processes that need no model (importing the teacher's module cost each of them torch and
transformers: seconds of CPU per process on a small machine).
"""

from __future__ import annotations

import logging
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xdistil_ray.run import layout
from xdistil_ray.observe import console, ray_metrics
from xdistil_ray.observe.progress import Throughput
from xdistil_ray.run.markers import ShardMarker
from xdistil_ray.run.runfolder import MARKER, RunFolder

log = logging.getLogger(__name__)

SHARDS = layout.TEACHER_SHARDS
SHARD_COLUMN = "shard"


def _to_arrow(block, per_token: bool = False) -> pa.Table:
    """Block -> table of plain Arrow types any parquet reader understands (no Ray tensor
    extension types): ``input_ids`` as ``list<int32>``, per-sentence outputs as
    ``fixed_size_list<halffloat>``, per-token outputs as ``list<halffloat>``.
    """
    from ray.data.block import BlockAccessor

    columns = BlockAccessor.for_block(block).to_numpy()
    table = {}
    for name, values in columns.items():
        if name == "input_ids":
            table[name] = pa.array([np.asarray(v, dtype=np.int32) for v in values],
                                   pa.list_(pa.int32()))
        elif name == "token_type_ids":
            table[name] = pa.array([np.asarray(v, dtype=np.int8) for v in values], pa.list_(pa.int8()))
        elif name == "logits_rest":
            table[name] = pa.array(np.asarray(values, dtype=np.float16), pa.float16())
        elif name == "logits_index":
            matrix = np.stack(list(values)).astype(np.int32)
            table[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)),
                                                            matrix.shape[1])
        elif name in ("logits", "hidden") and per_token:
            table[name] = pa.array([np.asarray(v, dtype=np.float16) for v in values],
                                   pa.list_(pa.float16()))
        elif name in ("logits", "hidden", "logits_topk"):
            matrix = np.stack(list(values)).astype(np.float16)
            table[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)),
                                                            matrix.shape[1])
        else:
            table[name] = pa.array(list(values))
    return pa.table(table)


class ShardLedger:
    """Counts the rows written per shard and commits each shard the moment it is whole, so that
    a driver lost half-way through keeps every finished shard. Runs as a small Ray actor."""

    def __init__(self, run: RunFolder, expected: dict[str, int], every_s: float = 10.0):
        self.run = run
        self.expected = expected
        self.written: dict[str, dict[str, int]] = {name: {} for name in expected}
        self.committed: list[str] = []
        self.progress = Throughput("teacher", sum(expected.values()), every_s)

    def add(self, shard: str, part: str, rows: int) -> None:
        """``part`` of ``shard`` holds ``rows`` rows; a write that Ray retried names the same
        part again (its name is its rows'), and counts once."""
        new = part not in self.written[shard]
        self.written[shard][part] = rows
        line = self.progress.add(rows) if new else None
        if line:
            console.show(line)
        if sum(self.written[shard].values()) == self.expected[shard] \
                and shard not in self.committed:
            if commit_shard(self.run, shard, self.expected[shard]):
                self.committed.append(shard)
                ray_metrics.shard_committed("teacher")
                log.info(f"teacher: shard {shard} committed "
                         f"({len(self.committed)}/{len(self.expected)} of this attempt)")

    def committed_shards(self) -> list[str]:
        return list(self.committed)


def part_name(ids: list[int]) -> str:
    """A part's file name, from the rows it holds (the lowest and highest row id, as 16 hex
    digits, and how many):
    a write that Ray retries writes the same rows under the same name, replacing the first
    attempt's file instead of adding a copy of its rows. Parts of one pass hold disjoint rows,
    so their names differ."""
    return f"part-{min(ids) % 2**64:016x}-{max(ids) % 2**64:016x}-{len(ids)}.parquet"


class ShardPartsDatasink:
    """Writes each block's rows under ``teacher/shards/<shard>/part-<rows>.parquet``
    (:func:`part_name`), atomically, and tells the ledger (an actor handle, or None) how many
    rows each part holds."""

    def __init__(self, run: RunFolder, per_token: bool = False, ledger=None):
        self.run = run
        self.per_token = per_token
        self.ledger = ledger

    def make(self):
        import ray
        from ray.data import Datasink

        run, per_token, ledger = self.run, self.per_token, self.ledger

        class _Sink(Datasink):
            def write(self, blocks, ctx):
                rows = 0
                for block in blocks:
                    table = _to_arrow(block, per_token)
                    shards = table.column(SHARD_COLUMN).to_pylist()
                    for shard in sorted(set(shards)):
                        mask = pa.array([s == shard for s in shards])
                        part = table.filter(mask).drop_columns([SHARD_COLUMN])
                        sink = pa.BufferOutputStream()
                        pq.write_table(part, sink)
                        name = part_name(part.column("id").to_pylist())
                        run.write_bytes(posixpath.join(SHARDS, shard, name),
                                        sink.getvalue().to_pybytes())
                        rows += part.num_rows
                        if ledger is not None:
                            ray.get(ledger.add.remote(shard, name, part.num_rows))
                return rows

        return _Sink()


def shard_name(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def add_shard_column(batch: dict) -> dict:
    batch[SHARD_COLUMN] = np.array([shard_name(p) for p in batch.pop("path")], dtype=object)
    return batch


def commit_shard(run: RunFolder, shard: str, expected_rows: int) -> bool:
    """Commits a shard whose parts hold exactly the ``expected_rows`` distinct rows. Parts that
    repeat rows (a retried write whose blocks were cut differently from the first attempt's)
    are merged into one part holding each row once, the others deleted, before the commit."""
    rel = posixpath.join(SHARDS, shard)
    parts = {n: s for n, s in run.list_files(rel).items() if n.startswith("part-") and ".tmp-" not in n}
    tables = {}
    for name in sorted(parts):
        with run.fs.open_input_file(run.path(rel, name)) as f:
            tables[name] = pq.read_table(f)
    ids = [i for t in tables.values() for i in t.column("id").to_pylist()]
    if len(set(ids)) != expected_rows:
        return False
    if len(ids) != expected_rows:  # the same rows twice: keep each once
        table = pa.concat_tables(tables.values())
        _, first = np.unique(np.asarray(table.column("id")), return_index=True)
        table = table.take(pa.array(np.sort(first)))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        name = part_name(table.column("id").to_pylist())
        run.write_bytes(posixpath.join(rel, name), sink.getvalue().to_pybytes())
        log.info(f"teacher: shard {shard}: {len(ids) - expected_rows} rows written twice "
                 f"(a retried write), merged into {name}")
        for old in parts:
            if old != name:
                run.delete(rel, old)
        parts = {name: run.list_files(rel)[name]}
    run.commit(rel, ShardMarker(files=parts, rows=expected_rows))
    return True


def committed_shards(run: RunFolder, names: list[str]) -> list[str]:
    """The shards of ``names`` whose marker names files that are all there with their sizes
    (one listing of ``teacher/shards``); a console line for each one that is not, which runs
    again."""
    found = run.list_files(SHARDS)
    done = []
    for name in names:
        marker = run.marker(posixpath.join(SHARDS, name), ShardMarker)
        if marker is None:
            continue
        bad = [f for f, size in marker.files.items()
               if found.get(posixpath.join(name, f)) != size]
        if bad:
            log.info(f"teacher: shard {name}: {', '.join(bad)} missing or of another "
                     f"size than its {MARKER} says: running it again")
            continue
        done.append(name)
    return done
