"""Fine-tune an exported (task-agnostic) student on a labeled task, on Ray Train.

    python jobs/finetune.py model=runs/agnostic/student              # the embedded reviews
    python jobs/finetune.py --config jobs/configs/finetune.yaml model=... labeled.train=... \\
        labeled.dev=... output=runs/ft-mytask
    python jobs/finetune.py model=... init=random output=runs/ft-scratch   # the baseline

Same conventions as jobs/distill.py: a YAML config (fields in xdistil_ray/config.py,
FinetuneJob), key.path=value overrides, a run folder that resumes and refuses unsafe changes.
"""

import argparse
import logging
import sys

from xdistil_ray.config import ConfigError, FinetuneJob, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", help="YAML config file (default: the built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        from xdistil_ray import finetune

        finetune.run(load_config(args.config, args.overrides, kind=FinetuneJob))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
