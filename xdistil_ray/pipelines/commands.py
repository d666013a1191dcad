"""The commands: ``xdistil-distill`` and ``xdistil-finetune`` (``[project.scripts]``), ``python -m
xdistil_ray [distill|finetune]``, and the job scripts ``jobs/distill.py`` and
``jobs/finetune.py`` that ``ray job submit`` runs, all of them these two functions."""

from __future__ import annotations

import sys

from xdistil_ray.config import FinetuneJob, load_config
from xdistil_ray.pipelines import cli

DISTILL = """Distill a teacher into a small student: the whole pipeline, one command.

    xdistil-distill                                          # the embedded default
    xdistil-distill --config tiny key.path=value ...         # a recipe shipped with the package
    xdistil-distill --config FILE.yaml --dry-run             # check, and print the plan only

(`python jobs/distill.py` and `python -m xdistil_ray distill` are the same command.)
"""

FINETUNE = """Fine-tune an exported (task-agnostic) student on a labeled task, on Ray Train.

    xdistil-finetune model=runs/agnostic/student              # the embedded reviews
    xdistil-finetune --config finetune model=... labeled.train=... labeled.dev=... \\
        output=runs/ft-mytask
    xdistil-finetune model=... init=random output=runs/ft-scratch   # the baseline
    xdistil-finetune model=... --dry-run                     # check, and print the plan only

Same conventions as xdistil-distill: a YAML config (fields in xdistil_ray/config/__init__.py,
FinetuneJob), key.path=value overrides, a run folder that resumes and refuses unsafe changes.
(`python jobs/finetune.py` and `python -m xdistil_ray finetune` are the same command.)
"""


def _parser(usage: str):
    parser = cli.parser(usage)
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and the storage, print each step (complete or "
                             "not, what it reads and writes, its resources); run nothing")
    return parser


def _dry_run(cfg):
    from xdistil_ray.pipelines.dry_run import dry_run

    return dry_run(cfg)


def distill(argv: list[str] | None = None) -> int:
    args = _parser(DISTILL).parse_args(argv)

    def job():
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            return _dry_run(cfg)
        from xdistil_ray.pipelines import distill as pipeline

        return pipeline.run(cfg, take_over=args.take_over)

    return cli.run_job(job, verbose=args.verbose, capture=not args.dry_run)


def finetune(argv: list[str] | None = None) -> int:
    args = _parser(FINETUNE).parse_args(argv)

    def job():
        cfg = load_config(args.config, args.overrides, kind=FinetuneJob)  # before torch and Ray
        if args.dry_run:
            return _dry_run(cfg)
        from xdistil_ray.pipelines import finetune as finetune_job

        return finetune_job.run(cfg, take_over=args.take_over)

    return cli.run_job(job, verbose=args.verbose, capture=not args.dry_run)


COMMANDS = {"distill": distill, "finetune": finetune}


def main(argv: list[str] | None = None) -> int:
    """``python -m xdistil_ray [distill|finetune] ...``: distill when no command is named."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return distill(argv)


def distill_entry() -> None:
    sys.exit(distill())


def finetune_entry() -> None:
    sys.exit(finetune())
