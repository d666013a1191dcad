"""Distill a teacher into a small student: the job script `ray job submit` runs.

    python jobs/distill.py                                   # the embedded default
    python jobs/distill.py --config jobs/configs/FILE.yaml key.path=value ...
    python jobs/distill.py --config FILE --dry-run           # check, and print the plan only

The same command as `xdistil-distill` (xdistil_ray/pipelines/commands.py).
"""

import sys

from xdistil_ray.pipelines.commands import distill

if __name__ == "__main__":
    sys.exit(distill())
