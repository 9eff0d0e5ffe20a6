"""What every command-line entry point shares: a failure is one clear message, not a traceback.

An entry point lists the errors a user can cause (a bad config, feature store, search
space, checkpoint, tracking server) and runs its body through :func:`explained`: such an
error prints one message naming the place and the command exits 2. ``--debug`` (see
:func:`add_debug_flag`) or ``SCD_DEBUG=1`` shows the traceback instead. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from scd_core.checkpoint import CheckpointError
from scd_core.config import ConfigError
from scd_core.features import FeatureStoreError

DEBUG_ENV = "SCD_DEBUG"
USAGE_EXIT = 2  # what argparse returns for a bad command line, too
# Errors that scd_core raises about the user's files; an entry point adds its own layer's.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FeatureStoreError, CheckpointError, OSError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (also: {DEBUG_ENV}=1)")


def explained(body: Callable[[], int], debug: bool, errors: tuple[type[BaseException], ...]) -> int:
    """Run ``body``; an error of the kinds in ``errors`` becomes one message on stderr and exit 2."""
    try:
        return body()
    except errors as err:
        if debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return USAGE_EXIT


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number ``>= low``; anything else is argparse's usage error
    naming the flag (``argument --threads: must be a whole number >= 1, got '0'``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
        return value

    return parse
