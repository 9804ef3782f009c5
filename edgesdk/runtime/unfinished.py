"""What a half-written bundle looks like, so `read_bundle` can refuse one (on-device side: standard library only).

The writer (`edgesdk.bundle`) stages a bundle in a hidden sibling folder `.NAME.partial-PID-XXXX` holding a marker
file `.incomplete` (JSON: the writing process's pid and host), and moves it into place with one `rename`, the only
commit point. An export killed before that rename leaves the staging folder behind, possibly with a manifest whose
hashes all match; such a folder is never a bundle: it is refused by its name (a hidden `.partial-` or `.old-`
folder) or by the marker (a staging folder copied or renamed by hand). The writer's own read-back of a staged
bundle before the rename is the one exception, scoped to that folder by `reading_staged`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from ..errors import BundleError

INCOMPLETE = ".incomplete"
STAGING_TAGS = (".partial-", ".old-")
_staged: contextvars.ContextVar[str | None] = contextvars.ContextVar("edgesdk_staged_bundle", default=None)


def is_staging_name(name: str) -> bool:
    return name.startswith(".") and any(tag in name for tag in STAGING_TAGS)


def refuse_unfinished(root: Path) -> None:
    """Raise BundleError when `root` is a staging folder or holds the marker of an unfinished export."""
    if _staged.get() == os.path.abspath(root):
        return
    if is_staging_name(root.name) or (root / INCOMPLETE).exists():
        raise BundleError(f"'{root}' is an unfinished bundle (an export was interrupted before it was moved into "
                          "place), not a bundle. Re-run the export; the next export to that folder removes it.")


@contextlib.contextmanager
def reading_staged(root: Path) -> Iterator[None]:
    """Let the exporter read back the staged bundle at `root` (in this context only) before it commits it."""
    token = _staged.set(os.path.abspath(root))
    try:
        yield
    finally:
        _staged.reset(token)


def owner_record() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()})


def write_owner_record(path: Path) -> None:
    """Write this process's owner_record to `path` in one rename: a process killed while writing leaves no record
    (only `path` + ".tmp"), never an empty or half-written one that would read as an unknowable owner for ever."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(owner_record(), encoding="utf-8")
    os.replace(partial, path)


def owner_gone(record_path: Path) -> bool:
    """True when the process that wrote `record_path` (an owner_record) is not running on this host any more.

    Unreadable records, other hosts and live (or unknowable) pids count as not gone: cleaning up is never worth
    deleting another export's work.
    """
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        pid, host = int(record["pid"]), str(record["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
