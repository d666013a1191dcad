"""Progress of long row-by-row steps: rows done, rows per second, time left.

Ray Data tasks tell a small actor how many rows each batch held; the actor prints a line at most
every ``every_s`` seconds. Ray forwards actor output to the driver's console, so the lines also
reach ``ray job logs``.
"""

from __future__ import annotations

import time

from xdistil_ray.observe import console, ray_metrics


class Throughput:
    """Counts rows of one pass and formats progress lines (plain object: no Ray)."""

    def __init__(self, label: str, total: int | None = None, every_s: float = 10.0,
                 clock=time.monotonic):
        self.label, self.total, self.every_s, self.clock = label, total, every_s, clock
        self.rows = 0
        self.started = clock()
        self.printed = self.started

    def add(self, rows: int) -> str | None:
        """Counts ``rows`` (and records them as Ray metrics); returns a line when one is due
        (every ``every_s``, and at the end)."""
        self.rows += rows
        now = self.clock()
        ray_metrics.rows(self.label, rows, self.rows / max(now - self.started, 1e-9))
        if now - self.printed >= self.every_s or (self.total and self.rows >= self.total):
            self.printed = now
            return self.line()
        return None

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.rows / elapsed
        done = f"{self.rows:,}"
        left = ""
        if self.total:
            done += f"/{self.total:,} ({100 * self.rows / self.total:.0f}%)"
            if rate > 0 and self.rows < self.total:
                left = f", ~{(self.total - self.rows) / rate:.0f}s left"
        return f"[xdistil] {self.label}: {done} rows, {rate:,.0f} rows/s{left}"


class ProgressActor:
    """A Ray actor holding one :class:`Throughput` per pass; prints its lines."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.passes: dict[str, Throughput] = {}

    def start(self, label: str, total: int | None = None) -> None:
        self.passes[label] = Throughput(label, total, self.every_s)

    def add(self, label: str, rows: int) -> None:
        line = self.passes[label].add(rows)
        if line:
            console.show(line)

    def finish(self, label: str) -> int:
        """Prints the pass's last line; returns its row count."""
        t = self.passes.pop(label)
        console.show(t.line())
        return t.rows


def start_actor(every_s: float = 10.0):
    """A :class:`ProgressActor` on the driver's node, taking no CPU."""
    import ray

    return ray.remote(num_cpus=0)(ProgressActor).remote(every_s)


def counted(batch, *, fn, progress, label: str, **kwargs):
    """Ray Data UDF wrapper: ``fn(batch, **kwargs)``, telling ``progress`` (an actor handle)
    how many rows the batch held, without waiting for it."""
    out = fn(batch, **kwargs)
    progress.add.remote(label, _num_rows(batch))
    return out


def _num_rows(batch) -> int:
    if hasattr(batch, "num_rows"):  # pyarrow
        return batch.num_rows
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)  # pandas
