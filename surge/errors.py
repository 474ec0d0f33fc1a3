"""Errors that end a command, each with the exit code the contract gives it.

The CLI turns a :class:`SurgeError` into one line on stderr and its ``exit_code``; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1  # exchange unreachable, nothing done
EXIT_USAGE = 2  # bad usage or bad config
EXIT_LOCKED = 3  # another `surge run` holds the lock
EXIT_UNRESOLVED = 4  # `surge run --live` stopped with a live entry or close unresolved (next start resumes)


class SurgeError(Exception):
    """A failure the user can act on: printed as one line, never as a traceback."""

    exit_code = EXIT_RUNTIME


class ConfigError(SurgeError):
    """Bad configuration (file, environment or flags). The message names the key."""

    exit_code = EXIT_USAGE
