"""Fine-tune an exported (task-agnostic) student on a labeled task: the job script `ray job
submit` runs.

    python jobs/finetune.py model=runs/agnostic/student              # the embedded reviews
    python jobs/finetune.py --config jobs/configs/finetune.yaml model=... labeled.train=... \\
        labeled.dev=... output=runs/ft-mytask

The same command as `xdistil-finetune` (xdistil_ray/pipelines/commands.py).
"""

import sys

from xdistil_ray.pipelines.commands import finetune

if __name__ == "__main__":
    sys.exit(finetune())
