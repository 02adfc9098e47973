"""Errors that carry a message meant for a person.

Anything raised as a :class:`MiniDecodersError` is printed by the command line as one line
(``error: ...``) with a non-zero exit code and no traceback: it is the user's input that is
wrong, not the program.
"""


class MiniDecodersError(Exception):
    """Base class of every error whose message is written for the user."""


class DataError(MiniDecodersError, ValueError):
    """A data file or record does not match what the package expects (names the file/field)."""


class DownloadError(MiniDecodersError, OSError):
    """A download failed or its checksum did not match."""


class RunError(MiniDecodersError, ValueError):
    """A RUN folder, checkpoint, model name or profile is missing, corrupt or incompatible."""
