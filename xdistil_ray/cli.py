"""What the job scripts share: the arguments (``--config FILE`` and ``key.path=value``
overrides), logging, and user mistakes as one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from xdistil_ray.config import ConfigError


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config file (default: the built-in defaults)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    return p


def run_job(job: Callable[[], object]) -> int:
    """Runs ``job``; a ConfigError (bad config, input, storage) is printed, status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        job()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
