"""One-line errors for bundle runs (`python -m monai.bundle run ...`).

MONAI wraps every failure inside a config expression or component in its own RuntimeError ("Failed to
evaluate ...") and the user sees a 50-135 line traceback whose last line is MONAI's, with the project's message
20-40 lines above it. `install()` (called by each bundle config's `initialize`) replaces the interpreter's
excepthook for the run: an uncaught error prints one line, `error: <the innermost cause>`, and the exit status
stays non-zero (1). `ZOO_DEBUG=1` shows the full traceback.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

DEBUG_ENV = "ZOO_DEBUG"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (explicit causes first, then implicit context)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def one_line(exc: BaseException) -> str:
    """The innermost cause's message, first line only (its type name if it has none)."""
    cause = root_cause(exc)
    text = str(cause).strip()
    if not text or isinstance(cause, KeyError):  # KeyError's str is a quoted repr
        text = f"{type(cause).__name__}: {text.strip(chr(39)) or 'no message'}"
    return text.splitlines()[0]


def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if os.environ.get(DEBUG_ENV) or issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    print(f"error: {one_line(exc)}  [{DEBUG_ENV}=1 shows the traceback]", file=sys.stderr, flush=True)


def install() -> None:
    """Print uncaught errors of this process as one line (see the module docstring)."""
    sys.excepthook = _hook
