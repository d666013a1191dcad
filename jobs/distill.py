"""Distill a teacher into a small student: the whole pipeline, one command.

    python jobs/distill.py                                   # the embedded default
    python jobs/distill.py --config jobs/configs/FILE.yaml key.path=value ...
    python jobs/distill.py --config FILE --dry-run           # check, and print the plan only
"""

import sys

from xdistil_ray.pipelines import cli
from xdistil_ray.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and the storage, print each step (complete or "
                             "not, what it reads and writes, its resources); run nothing")
    args = parser.parse_args(argv)

    def job():
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            from xdistil_ray.pipelines.dry_run import dry_run

            return dry_run(cfg)
        from xdistil_ray.pipelines import distill as pipeline

        return pipeline.run(cfg, take_over=args.take_over)

    return cli.run_job(job, verbose=args.verbose, capture=not args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
