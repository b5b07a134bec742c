"""Errors a user can cause (bad file, bad config key, missing weights).

The CLIs catch :class:`VidgenError` and print its message without a traceback; everything
else is a bug and keeps its traceback.
"""

import errno


class VidgenError(Exception):
    """A problem with the user's input: the message names the file or key and what to do."""


class DataError(VidgenError):
    """A file that cannot be read as the video, frame folder or archive it claims to be."""


class ConfigError(VidgenError):
    """A configuration key or value that does not exist or has the wrong type."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def describe_os_error(exc: OSError) -> str:
    """``PATH: No space left on device`` (both paths of a rename), on one line."""
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return one_line(f"{where}: {reason}" if where else reason)


def os_reason(exc: OSError) -> str:
    """Why an OSError happened, without the path (``No space left on device``)."""
    return one_line(exc.strerror or errno.errorcode.get(exc.errno or 0, "") or exc)


def output_error(exc: OSError, out: object, kept: str) -> VidgenError:
    """The user error for an OSError met while a command wrote ``out``: ``cannot write OUT:
    REASON; KEPT`` (``kept`` says what is left as it was). An error about another path (an
    input that could not be read, say) is reported with that path instead."""
    f, target = exc.filename, str(out)
    name = target.rstrip("/").rsplit("/", 1)[-1]
    if f is not None and name not in str(f) and not target.startswith(str(f)):
        return VidgenError(describe_os_error(exc))
    return VidgenError(f"cannot write {target}: {os_reason(exc)}; {kept}")
