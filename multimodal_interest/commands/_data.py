"""What the dataset sub-commands share: which errors are the user's, and how to report them."""
from __future__ import annotations

import sys

from multimodal_interest.data.download import ChecksumMismatch, DatasetUnavailable
from multimodal_interest.data.errors import DatasetError

USER_ERRORS = (DatasetError, DatasetUnavailable, ChecksumMismatch, FileExistsError,
               FileNotFoundError, KeyError, ValueError)


def fail(command: str, exc: Exception) -> int:
    """Print ``exc`` as the user's error (no traceback) and return the exit status 1."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    print(f"mmi {command}: error: {message}", file=sys.stderr)
    return 1
