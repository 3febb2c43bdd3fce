"""The one line a user sees for an error, and its exit code: shared by the CLI and the studio.

Errors tuneforge raises on purpose carry their own message; a file-system failure names the path and
what to do; input nested too deeply or not valid text is bad input (exit 2); anything else is a bug,
one line, with the traceback behind ``--debug``.
"""

from __future__ import annotations

import errno

from tuneforge.errors import TuneforgeError
from tuneforge.extras import EXTRA_OF, missing_extra_message


def describe_error(err: BaseException) -> tuple[str, int]:
    """The line a user sees for ``err`` and the exit code: 2 for anything the input or the system caused.

    Errors tuneforge raises on purpose carry their own message. A file-system failure (permission
    denied, disk full, a folder where a file was expected) names the path; a RecursionError or a
    UnicodeError can only come from an input nested too deeply or not valid text. Anything else is
    a bug: one line, and the traceback behind ``--debug``.
    """
    if isinstance(err, TuneforgeError):
        return f"tuneforge: error: {err}", err.exit_code
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] in EXTRA_OF:
        return f"tuneforge: error: {missing_extra_message(err.name or '')}", 2  # an optional extra not installed
    if isinstance(err, OSError):
        return f"tuneforge: error: {_os_error(err)}", 2
    if isinstance(err, RecursionError):
        return ("tuneforge: error: an input is nested too deeply to read (a recipe, data row or file with "
                "thousands of levels of brackets); flatten it"), 2
    if isinstance(err, UnicodeError):
        return f"tuneforge: error: text that is not valid Unicode ({_one_line(err)}); re-save the input as UTF-8", 2
    if isinstance(err, MemoryError):
        return "tuneforge: error: out of memory; use smaller inputs, train.batch_size or train.max_length", 2
    return (f"tuneforge: internal error: {type(err).__name__}: {_one_line(err)} "
            "(rerun with --debug for the traceback)"), 1


_OS_HINTS = {errno.ENOSPC: "free some disk space and rerun", errno.EDQUOT: "free some disk space and rerun",
             errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
             errno.EROFS: "the file system is read-only; pick another folder",
             errno.EISDIR: "give a file path, not a folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.ENOENT: "check the path"}


def _os_error(err: OSError) -> str:
    """``<what went wrong>: <path>[ -> <path>]; <what to do>`` for a file-system error."""
    what = err.strerror or _one_line(err) or type(err).__name__
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    hint = _OS_HINTS.get(err.errno or -1)
    return what + (f": {' -> '.join(paths)}" if paths else "") + (f"; {hint}" if hint else "")


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
