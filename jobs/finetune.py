"""Fine-tune an exported (task-agnostic) student on a labeled task, on Ray Train.

    python jobs/finetune.py model=runs/agnostic/student              # the embedded reviews
    python jobs/finetune.py --config jobs/configs/finetune.yaml model=... labeled.train=... \\
        labeled.dev=... output=runs/ft-mytask
    python jobs/finetune.py model=... init=random output=runs/ft-scratch   # the baseline

Same conventions as jobs/distill.py: a YAML config (fields in xdistil_ray/config.py,
FinetuneJob), key.path=value overrides, a run folder that resumes and refuses unsafe changes.
"""

import sys

from xdistil_ray.pipelines import cli
from xdistil_ray.config import FinetuneJob, load_config


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__).parse_args(argv)

    def job():
        cfg = load_config(args.config, args.overrides, kind=FinetuneJob)  # before torch and Ray
        from xdistil_ray.pipelines import finetune

        return finetune.run(cfg, take_over=args.take_over)

    return cli.run_job(job, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
