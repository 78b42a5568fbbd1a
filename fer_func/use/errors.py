"""The one error type of ``fer_func.use``: a user's mistake, reported by the CLI as one line and exit 2."""
from fer_func.config import ConfigError


class UseError(ConfigError):
    """A wrong run directory, model file, image or option: the message names the file and the fix.

    A ConfigError subclass so callers that already turn ConfigError into ``error: ...`` need nothing new.
    """
