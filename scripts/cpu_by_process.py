"""Runs a command and prints where the machine's CPU time went while it ran, by process kind
(Ray names its workers ``ray::<Actor>``; ``ray::IDLE`` are worker processes between tasks).

    .venv/bin/python scripts/cpu_by_process.py .venv/bin/python jobs/distill.py --config ...

Samples every process's user + system time from /proc twice a second (Linux), so a process
that lives less than half a second may be missed; counts only CPU used after the start.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def sample(into: dict) -> None:
    """(pid, start time) -> (CPU seconds so far, process kind), for every process now."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        into[(pid, fields[19])] = (cpu, kind(cmd, stat.split("(", 1)[1].rsplit(")", 1)[0]))


def kind(cmd: str, comm: str) -> str:
    if not cmd:
        return comm
    first = cmd.split()[0]
    if first.startswith("ray::"):
        return first.split(".")[0]
    if "python" in os.path.basename(first):
        script = next((a for a in cmd.split()[1:] if not a.startswith("-")), "")
        return f"python {os.path.basename(script)}"
    return os.path.basename(first)


def main(command: list[str]) -> int:
    before: dict = {}
    sample(before)
    seen: dict = {}
    start = time.time()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        sample(seen)
        time.sleep(0.5)
    sample(seen)
    wall = time.time() - start
    by_kind: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for key, (cpu, name) in seen.items():
        used = cpu - before.get(key, (0.0, ""))[0]
        if used > 0.05:
            by_kind[name] += used
            count[name] += 1
    total = sum(by_kind.values())
    print(f"wall {wall:.0f} s, CPU {total:.0f} s ({total / wall:.2f} of {os.cpu_count()} cores)")
    for name, cpu in by_kind.most_common(30):
        print(f"{cpu:8.1f} s  {count[name]:3d} process(es)  {name[:80]}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
