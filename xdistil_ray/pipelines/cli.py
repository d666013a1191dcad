"""What the job scripts share: the arguments (``--config FILE``, ``key.path=value`` overrides,
``--verbose``), the console (see :mod:`xdistil_ray.observe.console`), and user mistakes as one line on
stderr with exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from typing import Callable

from xdistil_ray.observe import console
from xdistil_ray.config import ConfigError


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="a YAML config file, or a recipe shipped with the package by "
                                    "its name (tiny, default, three_stage, ...); default: the "
                                    "built-in defaults")
    p.add_argument("--verbose", action="store_true",
                   help="show everything on the console (Ray, Ray Data, DeepSpeed, transformers, "
                        "workers), not only the project's lines; <run>/logs/ has it either way")
    p.add_argument("--take-over", action="store_true",
                   help="take the run folder's lease from a driver that is gone (one driver "
                        "per output; a lease not renewed for 5 minutes is free anyway)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    return p


def run_job(job: Callable[[], object], *, verbose: bool = False, capture: bool = True) -> int:
    """Runs ``job`` with the console captured (``capture``); a ConfigError (bad config, input,
    storage) is printed as one line, status 2; any other failure with its traceback, status 1."""
    session = console.capture(verbose) if capture else contextlib.nullcontext()
    with session as con:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        try:
            job()
        except ConfigError as e:
            _show(con, f"error: {e}")
            return 2
        except Exception:  # noqa: BLE001 - shown on the console, not only in the logs
            _show(con, traceback.format_exc())
            return 1
        finally:
            _shutdown_ray()  # inside the capture: Ray's last messages go to the logs too
    return 0


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _show(con, text: str) -> None:
    if con is None:
        print(text, file=sys.stderr)
    else:
        con.error(text)
