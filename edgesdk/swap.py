"""Replacing a bundle in one atomic step: Linux `renameat2(RENAME_EXCHANGE)` swaps two folders' names at once.

Without it, replacing an existing bundle takes two renames (old away, new in): a reader in between sees no bundle,
and a kill in between leaves none. With it, a reader sees the old bundle or the new one, never neither. Where the
call or the file system does not support it (macOS, Windows, some network or overlay file systems), `exchange`
returns False and the writer falls back to the two renames.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths `a` and `b` (both must exist); False if this platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0
