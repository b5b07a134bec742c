"""Errors a user can cause (bad file, bad config key, missing weights).

The CLIs catch :class:`VidgenError` and print its message without a traceback; everything
else is a bug and keeps its traceback.
"""


class VidgenError(Exception):
    """A problem with the user's input: the message names the file or key and what to do."""


class DataError(VidgenError):
    """A file that cannot be read as the video, frame folder or archive it claims to be."""


class ConfigError(VidgenError):
    """A configuration key or value that does not exist or has the wrong type."""
