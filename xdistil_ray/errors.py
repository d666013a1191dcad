"""The project's error for user mistakes: raised at the boundary (config, inputs, storage),
printed by the job scripts as one line with exit status 2. Knows nothing of the rest."""


class ConfigError(ValueError):
    """A user mistake in the configuration; the message names the field and the fix."""
