"""The one error type of the download side of the zoo room.

Its message is a single line that names the problem and the fix; the CLI prints it after ``error:`` and
exits non-zero, so every failure a user can cause or meet reads the same way.
"""

from __future__ import annotations


class DownloadError(RuntimeError):
    """A download, checksum or offline-cache failure; ``str(err)`` is one line: what went wrong, how to fix it."""


def one_line(text: object) -> str:
    """Collapse a (library) message onto one line, so that wrapped errors stay one line too."""
    return " ".join(str(text).split())
