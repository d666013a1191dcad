"""Distill a teacher into a small student: the whole pipeline, one command.

    python jobs/distill.py                                   # the embedded default
    python jobs/distill.py --config jobs/configs/FILE.yaml key.path=value ...
    python jobs/distill.py --config FILE --dry-run           # check, and print the plan only
"""

import argparse
import logging
import sys

from xdistil_ray import pipeline
from xdistil_ray.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", help="YAML config file (default: the embedded default)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and the storage, print each step (complete or "
                             "not, what it reads and writes, its resources); run nothing")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            from xdistil_ray.dry_run import dry_run

            dry_run(cfg)
        else:
            pipeline.run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
