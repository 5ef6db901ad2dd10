"""Muting what C and C++ libraries print on file descriptor 2 (libsndfile's MP3 notes,
mediapipe's TF Lite and absl log lines, also from worker threads), while Python's own
`sys.stderr` (progress bars, messages) stays visible through a duplicate of the real stderr."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # e.g. pytest's capture buffers
        return False


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration; a process without a usable fd 2 is left as is."""
    python_stderr = sys.stderr
    try:
        python_stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    replacement = None
    try:
        os.dup2(devnull, 2)
        if _writes_to_fd2(python_stderr):
            replacement = io.TextIOWrapper(io.FileIO(os.dup(saved), "w"), line_buffering=True,
                                           encoding=python_stderr.encoding,
                                           errors="backslashreplace")
            sys.stderr = replacement
        yield
    finally:
        if replacement is not None:
            replacement.flush()
            sys.stderr = python_stderr
            replacement.close()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
