"""Atomic file writes, shared by the token cache and the run folder."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import PosbenchError


def atomic_write(path: Path, content: bytes | Callable[[Path], None]) -> None:
    """Write `content` (bytes, or a function writing to the path it is given) to a temporary file in
    the same folder, fsync, then rename over `path`: readers and a crash mid-write see the old file
    or the whole new one, never a torn one. A full disk is one line (PosbenchError), the old file kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # unique per writer
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
        raise PosbenchError(f"no space left on device while writing {path}; {kept}. Free some space and run "
                            "the command again (a run resumes from its last checkpoint)") from None
    finally:
        tmp.unlink(missing_ok=True)
