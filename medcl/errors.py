"""User-facing errors.

A :class:`MedclError` is a mistake the user can fix (a bad path, a bad config value, a malformed
manifest). The CLI prints its message on one line, without a traceback, and exits with status 2.
Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""


class MedclError(Exception):
    """An error caused by user input; its message names the file or field at fault."""


class ConfigError(MedclError):
    """A configuration file or override is invalid; raised before any work starts."""


class ManifestError(MedclError):
    """A manifest failed validation; the message names the offending rows."""
