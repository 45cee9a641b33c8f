"""Directories replaced in one step, by one writer at a time (stores and checkpoints).

A writer builds the new directory under a temporary name next to the target,
``<dir>/.<name>.writing-<pid>-<hex>``, and :func:`replacing` renames it into
place only when everything in it is written. Until then the target is whatever
it was before (nothing, or the previous version, untouched); a writer that fails
removes its temporary directory, and one that is killed leaves it behind for the
next writer to the same target to remove.

The rename is atomic: a new target is one ``rename(2)``; an existing one is
swapped with the new directory by ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+,
glibc 2.28+), so that a reader sees the old or the new version and never no
version. Where that call is missing the old version is moved aside first (two
renames; a reader in between finds no target).

One writer at a time: :func:`replacing` holds an exclusive ``flock`` on
``<dir>/.<name>.lock`` (removed when it ends) and refuses a second writer with a
``ValueError`` naming the process that holds it. The kernel drops the lock of a
process that dies, so a killed writer never blocks the next one.

Local paths only: a URL (``scheme://...``) has no rename; callers write in place.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import socket
import uuid
from typing import Iterator

try:                                       # POSIX
    import fcntl
except ImportError:                        # pragma: no cover - Windows
    fcntl = None
    import msvcrt

__all__ = ["replacing", "exclusive_lock", "replace_directory", "staging_pattern"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _sibling(path: str, suffix: str) -> str:
    head, name = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{name}.{suffix}")


def staging_pattern(path) -> str:
    """The glob of the temporary directories writers of ``path`` create."""
    return glob.escape(_sibling(os.fspath(path), "writing-")) + "*"


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:                                                 # pragma: no cover
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


@contextlib.contextmanager
def exclusive_lock(path) -> Iterator[None]:
    """Hold ``<dir>/.<name>.lock`` exclusively for the duration of the block.

    Raises ``ValueError`` at once (never waits) when another process, or another
    writer in this one, holds it.
    """
    path = os.fspath(path)
    lock_path = _sibling(path, "lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise ValueError(f"refusing to write {path!r}: another writer ({holder or 'unknown'}) "
                             f"is writing it now (lock file {lock_path}); wait for it to "
                             f"finish or write elsewhere")
        try:                         # the file we locked must still be the one at lock_path
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)                 # its previous holder removed it meanwhile: start again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


def _exchange(a: str, b: str) -> bool:
    """Swap two existing paths atomically; ``False`` when the platform cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False                 # kernel or file system without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), b)


def replace_directory(new: str, target: str) -> None:
    """Put directory ``new`` at ``target``; the previous ``target`` (if any) ends up at ``new``."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if _exchange(new, target):
        return
    aside = f"{new}.old"
    os.rename(target, aside)
    os.rename(new, target)
    os.rename(aside, new)


@contextlib.contextmanager
def replacing(path) -> Iterator[str]:
    """Yield a fresh temporary directory name next to ``path``; on a normal exit it
    replaces ``path`` in one step, on an exception it is removed and ``path`` is
    left as it was.

    Holds :func:`exclusive_lock` on ``path`` throughout and first removes what
    killed writers of ``path`` left behind.
    """
    path = os.path.abspath(os.fspath(path))
    with exclusive_lock(path):
        for stale in glob.glob(staging_pattern(path)):
            shutil.rmtree(stale, ignore_errors=True)
        staging = _sibling(path, f"writing-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            yield staging
            replace_directory(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)   # a failed write, or the old version
