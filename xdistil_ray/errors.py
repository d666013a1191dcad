"""The project's error for user mistakes: raised at the boundary (config, inputs, storage),
printed by the job scripts as one line with exit status 2. Knows nothing of the rest."""


class ConfigError(ValueError):
    """A user mistake in the configuration; the message names the field and the fix."""


class WillFailAgain(ConfigError):
    """A training worker's error that a restart would meet again: its model cannot be built from
    the files and settings it was given. The worker raises it; the driver stops the run with
    its message at once instead of restarting the worker group ``train.max_failures`` times."""


WILL_FAIL_AGAIN_TAG = "[will fail again]"
"""Begins a :class:`WillFailAgain` message: found in what Ray Train hands the driver (the
worker's traceback as text) whatever wraps the exception."""


def will_fail_again(what: str, error: BaseException) -> WillFailAgain:
    """The worker's :class:`WillFailAgain` for ``error``, met while building ``what``."""
    return WillFailAgain(f"{WILL_FAIL_AGAIN_TAG} {what}: {type(error).__name__}: {error}")


def will_fail_again_message(error: BaseException) -> str | None:
    """The :class:`WillFailAgain` message inside a failed Ray Train run's error (any worker's),
    else None."""
    failures = getattr(error, "worker_failures", None) or {}
    for failure in failures.values():
        base = getattr(failure, "_base_exc", failure)  # Ray Train's wrapper keeps the original
        text = str(base) if isinstance(base, WillFailAgain) else str(failure)
        if WILL_FAIL_AGAIN_TAG in text:
            line = next(line for line in text.splitlines() if WILL_FAIL_AGAIN_TAG in line)
            return line[line.index(WILL_FAIL_AGAIN_TAG) + len(WILL_FAIL_AGAIN_TAG):].strip()
    return None
