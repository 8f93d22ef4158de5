"""Writing files safely: a temporary name, then a rename; a full disk said in plain words.

Every file the pipeline writes goes through :func:`writing`, so a reader (dbt, the next
run, a person) never sees half a file under a real name, and a write that fails leaves
no temporary behind. A full disk is not worth retrying (it does not free itself in
seconds): :func:`disk_full_reported` turns it into a :class:`DiskFullError` that names
the folder and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tasks.errors import DiskFullError, UsageError

#: errno values of a filesystem that has no room left (ENOSPC), or no quota left (EDQUOT).
_FULL = {errno.ENOSPC, errno.EDQUOT}
#: How a full disk reads when a Rust or C++ writer (polars, pyarrow) wraps the OS error.
_FULL_TEXTS = ("os error 28", "No space left on device", "Disk quota exceeded")
#: Free bytes below which a failed write is put down to a full disk whatever its message.
_NEARLY_FULL = 64 << 10


def temporary_name(name: str) -> str:
    """The temporary name a file is written under before it is renamed to ``name``."""
    return f".{name}.partial"


def is_temporary(name: str) -> bool:
    """Whether a file name is one of our temporaries (``.<name>.partial``)."""
    return name.startswith(".") and name.endswith(".partial") and len(name) > len("..partial")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means the filesystem is out of space (or of quota)."""
    if isinstance(exc, DiskFullError):
        return True
    if getattr(exc, "errno", None) in _FULL:
        return True
    text = str(exc)
    return isinstance(exc, Exception) and any(t in text for t in _FULL_TEXTS)


#: Per process: with the pid and a counter, a temporary name no other writer uses at once
#: (threads, forked workers, or another machine writing to the same shared folder).
_TOKEN = secrets.token_hex(2)
_COUNTER = itertools.count()


def _temporary_path(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, temporary_name(f"{name}.{_TOKEN}{os.getpid():x}.{next(_COUNTER):x}"))


def _make_parent(path: str) -> None:
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):  # one stat; mkdir(exist_ok) costs an exception
        os.makedirs(folder, exist_ok=True)


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block ends.

    If the block (or the rename) fails, the temporary file is removed and the error
    goes on: nothing is left under the real name nor under the temporary one. Each call
    has a temporary of its own: two writers of one file (copies of an instance in two
    processes) never rename each other's.
    """
    final = os.fspath(path)
    tmp = _temporary_path(final)
    try:
        _make_parent(final)
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        # never raise from the cleanup: the first error (a full disk, a lake under a file) is the news
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes | memoryview, *, times_ns: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary name, as :func:`writing` does, in four system calls.

    For the many small files of a batch (raw copies, previews), where :func:`writing`'s
    file objects cost as much as the write itself.

    Parameters
    ----------
    path : str or Path
    data : bytes or memoryview
    times_ns : (int, int), optional
        Access and modification times to give the file (``os.utime``'s ``ns``).
    """
    final = os.fspath(path)
    tmp = _temporary_path(final)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            _make_parent(final)
            fd = os.open(tmp, flags, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if times_ns is not None:
                os.utime(fd, ns=times_ns)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        # never raise from the cleanup: the first error (a full disk, a lake under a file) is the news
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike[str], *, copy_to: BinaryIO | None = None) -> str:
    """Hex SHA-256 of a file's content (:func:`hashlib.file_digest`): the one place a file is hashed.

    Parameters
    ----------
    path : str or path-like
    copy_to : binary file, optional
        Also receives every block read, so a copy and its hash take one pass over the file.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh if copy_to is None else _CopyingReader(fh, copy_to), "sha256").hexdigest()


class _CopyingReader(io.RawIOBase):
    """A binary file whose blocks, as they are read, are also written to ``sink``."""

    def __init__(self, source: BinaryIO, sink: BinaryIO) -> None:
        self._source, self._sink = source, sink

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._source.readinto(buffer)
        if n:
            self._sink.write(memoryview(buffer)[:n])
        return n or 0


def ensure_writable_folder(folder: str | Path, *, what: str, option: str) -> None:
    """Create ``folder`` if needed and check that a file can be written in it (then removed).

    For checks before a run starts: an unwritable lake (read-only file system, a path
    under a file, no permission) is said in one line instead of failing inside a batch.

    Parameters
    ----------
    folder : str or Path
    what : str
        What the folder is, for the message (``lake``, ``output folder``).
    option : str
        The option that names it (``--lake``).

    Raises
    ------
    UsageError
        Naming the folder, why it cannot be written, and the option to change.
    """
    path = os.fspath(folder)
    try:
        os.makedirs(path, exist_ok=True)
        probe = _temporary_path(os.path.join(path, "write-check"))
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            why = f"{why}: a file is in the way"
        msg = f"{what} {path!r} cannot be written ({why}); pass {option} with a folder you can write to"
        raise UsageError(msg) from exc


def _free_bytes(folder: Path) -> int:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


@contextmanager
def disk_full_reported(*folders: str | Path) -> Iterator[None]:
    """Turn running out of space inside the block into a :class:`DiskFullError`.

    Parameters
    ----------
    *folders : str or Path
        The local folders the block writes to (``s3://`` locations are ignored), most
        specific first. The error names the one the failed write was under, else the
        one with least room.

    Raises
    ------
    DiskFullError
        If the block failed because a filesystem is full.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        local = [Path(f) for f in folders if f and "://" not in str(f)]
        # some writers lose the OS error on the way (polars' Parquet sink reports a
        # "thrift transport error"): a filesystem with next to no room left tells then
        if not local or not (is_disk_full(exc) or min(_free_bytes(f) for f in local) < _NEARLY_FULL):
            raise
        named = [Path(n) for n in (getattr(exc, "filename2", None), getattr(exc, "filename", None)) if isinstance(n, str)]
        hits = [f for f in local for n in named if n.is_relative_to(f)]
        folder = hits[0] if hits else min(local, key=_free_bytes)
        msg = (
            f"the disk is full: no space left on the filesystem of {folder} ({_free_bytes(folder)} bytes free). "
            "Free space there, or move the lake (--lake) or the scratch folder (TMPDIR) to a larger disk, "
            "then run again: batches already in the manifest are not redone, the others start over"
        )
        raise DiskFullError(msg) from exc
