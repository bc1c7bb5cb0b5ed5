"""One writer per run folder: an exclusive OS-level lock (flock) on RUN/.lock, held for as long as a
process writes the folder (train, resume, the training inside compare).

The kernel drops an flock when its process ends, however it ends (SIGKILL included), so the lock is
never stale and there is nothing to clean up. The lock file stays in the folder between writers:
deleting it would let a new writer lock a fresh file while an old one still holds the deleted one.
Readers (eval-extrapolate, inspect-heads, sample) take no lock; every file is replaced atomically,
so they see the old file or the whole new one."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import PosbenchError

LOCK_NAME = ".lock"  # not part of the run: folder checks skip it
NO_LOCK_ENV = "POSBENCH_NO_LOCK"  # set to 1 on a file system without locks: one writer is then up to you
# errors of a file system that has no flock (NFS without lockd, Lustre without -o flock, some FUSE mounts)
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


@contextlib.contextmanager
def lock_run_dir(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block, or raise PosbenchError at once (never wait) naming the
    holder. `enabled=False` (the ranks other than 0 under torchrun, which write nothing) skips it."""
    if not enabled or os.environ.get(NO_LOCK_ENV) == "1":
        yield
        return
    created = not Path(run_dir).exists()
    fd = _acquire(Path(run_dir))
    try:
        yield
    finally:
        os.ftruncate(fd, 0)  # the holder's line goes with the lock, so a reader never finds a past one
        _remove_if_unused(Path(run_dir), created)  # still holding the lock: no one else can have taken it
        os.close(fd)  # closing the file releases the flock


def _remove_if_unused(run_dir: Path, created: bool) -> None:
    """A folder the lock created and nothing else wrote into (bad input found after locking) goes."""
    if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def _acquire(run_dir: Path) -> int:
    """The locked lock file's descriptor, with this process written into it."""
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PosbenchError(f"cannot create the lock file {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # LOCK_NB: a held lock is an answer, not a wait
    except BlockingIOError:
        os.close(fd)
        raise PosbenchError(f"{run_dir} is being written by {_holder(path)}; wait for it to finish, or stop it "
                            "(a killed run resumes from its last checkpoint)") from None
    except OSError as e:
        os.close(fd)
        if e.errno in UNSUPPORTED:
            raise PosbenchError(f"cannot lock {path}: this file system does not support file locks ({e.strerror}); "
                                f"put the run folder on a local disk, or set {NO_LOCK_ENV}=1 to write it "
                                "without a lock (then never start two writers on one folder)") from None
        raise PosbenchError(f"cannot lock {path}: {e.strerror}") from None
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode() + b"\n", 0)  # in place: replacing the file would drop the lock
    return fd


def _holder(path: Path, wait: float = 0.5) -> str:
    """Who holds the lock, as the holder wrote it. It writes just after locking: give it a moment."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads(path.read_text())
            return f"another posbench (pid {info['pid']} on {info['host']}, since {info['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "another process (it has not said which)"
            time.sleep(0.02)
