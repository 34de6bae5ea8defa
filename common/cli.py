"""One-line errors for bundle runs (`python -m monai.bundle run ...`).

MONAI wraps every failure inside a config expression or component in its own RuntimeError ("Failed to
evaluate ...") and the user sees a 50-135 line traceback whose last line is MONAI's, with the project's message
20-40 lines above it. `install()` (called by each bundle config's `initialize`) replaces the interpreter's
excepthook for the run: an uncaught error prints one line, `error: <the innermost cause>`, and the exit status
stays non-zero (1). `ZOO_DEBUG=1` shows the full traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from types import TracebackType

DEBUG_ENV = "ZOO_DEBUG"


def chain(exc: BaseException) -> list[BaseException]:
    """The exceptions of a chain, outermost first (explicit causes first, then implicit context)."""
    found = [exc]
    while True:
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if inner is None or any(inner is e for e in found):
            return found
        found.append(inner)
        exc = inner


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain."""
    return chain(exc)[-1]


def permission_denied(exc: BaseException) -> OSError | None:
    """The chain's permission error (EACCES, EPERM, EROFS), if any: it is the cause, whatever it led to (pathlib's
    mkdir(parents=True) hides it as the context of a misleading 'No such file or directory')."""
    for e in chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return e
    return None


def one_line(exc: BaseException) -> str:
    """The innermost cause's message, first line only (its type name if it has none); a permission error anywhere
    in the chain is named with the fix."""
    denied = permission_denied(exc)
    if denied is not None:
        where = f"'{denied.filename}'" if denied.filename else "a file this run needs"
        return (f"permission denied on {where} ({denied.strerror}): give a path this user may write (e.g. another "
                "--output_dir) or fix its permissions")
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


# arguments of `python -m monai.bundle run` itself (not config ids)
RUN_ARGS = frozenset({"config_file", "meta_file", "logging_file", "init_id", "run_id", "final_id", "tracking",
                      "args_file", "workflow_type", "workflow_name", "properties_path"})


class OverrideError(ValueError):
    """A command-line override names no id of the bundle's configs."""


def _command_line(argv: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """(config files, {override key: value} in command-line order) of a `python -m monai.bundle run` command line,
    or None for another program."""
    if not argv or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py") or argv[1:2] != ["run"]:
        return None
    import ast

    values: dict[str, str] = {}
    args = argv[2:]
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            values[key] = value
        i += 1
    files = values.get("config_file", "")
    try:
        parsed = ast.literal_eval(files) if files.strip().startswith(("[", "(")) else files
    except (ValueError, SyntaxError):
        parsed = files
    config_files = [parsed] if isinstance(parsed, str) else [str(f) for f in parsed]
    return [f for f in config_files if f], values


def config_ids(config_files: list[str]) -> set[str]:
    """Every id of the merged configs: top-level keys and nested paths (``a#b``, ``a#0``)."""
    from monai.bundle import ConfigParser

    ids: set[str] = set()

    def walk(prefix: str, value: object) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            path = f"{prefix}#{k}" if prefix else str(k)
            ids.add(path)
            walk(path, v)

    walk("", ConfigParser.load_config_files(config_files))
    return ids


def check_device(argv: list[str] | None = None) -> None:
    """``--device cuda`` on a machine where PyTorch sees no GPU: one line now, not a traceback mid-run."""
    found = _command_line(list(sys.argv if argv is None else argv))
    value = found[1].get("device", "") if found else ""
    if value.strip().lower().startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OverrideError(f"--device {value}: PyTorch sees no CUDA GPU on this machine (torch "
                                f"{torch.__version__}): use --device cpu")


def check_overrides(argv: list[str] | None = None) -> None:
    """Refuse an override that names no config id (``--guidance 9.0`` would otherwise be silently ignored),
    naming the closest id. Only for `python -m monai.bundle run` command lines."""
    import difflib

    found = _command_line(list(sys.argv if argv is None else argv))
    if found is None or not found[0]:
        return
    config_files, values = found
    try:
        known = config_ids(config_files)
    except Exception:
        return  # MONAI itself reports unreadable config files
    for key in values:
        if key in RUN_ARGS or key in known:
            continue
        top = [k for k in known if "#" not in k] + sorted(RUN_ARGS)
        close = difflib.get_close_matches(key, top if "#" not in key else sorted(known), n=1, cutoff=0.5)
        hint = f"did you mean --{close[0]}?" if close else "see the bundle's configs for the ids it takes"
        raise OverrideError(f"unknown override --{key}: this bundle has no id {key!r}; {hint}")


ALL_RANKS_ENV = "ZOO_LOG_ALL_RANKS"


def quiet_other_ranks() -> None:
    """Under ``torchrun`` only rank 0 logs information (each line was printed once per rank); the other ranks
    still log warnings and errors, and print what they write. ``ZOO_LOG_ALL_RANKS=1`` keeps every rank's log."""
    if int(os.environ.get("RANK", "0") or 0) > 0 and not os.environ.get(ALL_RANKS_ENV):
        logging.disable(logging.INFO)


def install() -> None:
    """Print uncaught errors of this process as one line (see the module docstring), and refuse command-line
    overrides the configs do not know."""
    sys.excepthook = _hook
    quiet_other_ranks()
    check_overrides()
    check_device()

