"""Writing files safely: a temporary name, then a rename; a full disk said in plain words.

Every file the pipeline writes goes through :func:`writing`, so a reader (dbt, the next
run, a person) never sees half a file under a real name, and a write that fails leaves
no temporary behind. A full disk is not worth retrying (it does not free itself in
seconds): :func:`disk_full_reported` turns it into a :class:`DiskFullError` that names
the folder and what to do.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.errors import DiskFullError

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


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block ends.

    If the block (or the rename) fails, the temporary file is removed and the error
    goes on: nothing is left under the real name nor under the temporary one. Each call
    has a temporary of its own: two writers of one file (copies of an instance in two
    processes) never rename each other's.
    """
    tmp = path.with_name(temporary_name(f"{path.name}.{secrets.token_hex(4)}"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
