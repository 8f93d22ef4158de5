"""Objects at the source and in the lake's raw zone: list, copy, batch.

Local folders; every function speaks in ``ObjectInfo`` (key, size, etag), as the S3
functions beside them (:mod:`tasks.lake.s3`) do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from stat import S_ISLNK, S_ISREG

from tasks.errors import SourceError
from tasks.lake.files import is_temporary, sha256_file, write_atomic, writing

RAW_ZONE = "raw"
TABLES_ZONE = "tables"
PREVIEWS_ZONE = "previews"
QUARANTINE_ZONE = "quarantine"
ARCHIVE_ZONE = "archive"
DEID_ZONE = "deid"


@dataclass(frozen=True, order=True)
class ObjectInfo:
    """An object at the source.

    Parameters
    ----------
    key : str
        Path relative to the source root, with ``/`` separators.
    size : int
        Bytes.
    etag : str
        Version tag: S3's ETag, or ``size-mtime_ns`` for a local file.
    last_modified : datetime, optional
        When the object was last written (S3 ``LastModified``); for watermarks.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime | None = field(default=None, compare=False)


def list_local_objects(root: Path, *, since: datetime | None = None) -> list[ObjectInfo]:
    """Every regular file below ``root`` (modified at or after ``since``, if given), sorted by key.

    Nothing is skipped silently: hidden files and folders (``.name``) are listed like
    any other, so a DICOM named ``.x.dcm`` is ingested and OS litter (``.DS_Store``) is
    quarantined once with a reason (``not_dicom``) and recorded in the manifest. The one
    exception is our own temporary name, ``.<name>.partial`` (``tasks.lake.files.is_temporary``):
    a copy in progress, or one a killed run left, in a folder this project writes (a
    lake's raw zone used as a source); the whole file is listed under its real name once
    the write completes, and ``sweep_partials`` removes leftovers. Symbolic links are
    listed (etag ``symlink-...``) but never followed: staging rejects them with reason
    ``symlink``.

    Parameters
    ----------
    root : Path
        The source folder.
    since : datetime, optional
        Watermark: only files whose modification time is at or after it (as S3's
        ``LastModified`` for a bucket). Symbolic links are kept whatever their time.

    Returns
    -------
    list of ObjectInfo

    Raises
    ------
    SourceError
        If ``root`` is not a readable folder.
    """
    if not root.is_dir():
        msg = f"source folder {str(root)!r} does not exist or is not a folder; pass --source DIR"
        raise SourceError(msg)
    found: list[ObjectInfo] = []
    after = None if since is None else since.timestamp()
    root_dir = os.fspath(root)
    skip = len(root_dir.rstrip(os.sep)) + 1  # dirpath[skip:] is the folder relative to root
    # str paths and one lstat per file: pathlib would cost as much as the listing itself
    for dirpath, dirnames, filenames in os.walk(root_dir):
        dirnames.sort()
        folder = dirpath[skip:].replace(os.sep, "/")
        for name in filenames:
            if is_temporary(name):
                continue
            key = f"{folder}/{name}" if folder else name
            st = os.lstat(os.path.join(dirpath, name))
            if S_ISLNK(st.st_mode):  # listed, never followed: staging rejects it with a reason
                found.append(ObjectInfo(key, 0, f"symlink-{st.st_mtime_ns}"))
            elif S_ISREG(st.st_mode) and (after is None or st.st_mtime >= after):
                found.append(ObjectInfo(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}"))
    found.sort()
    return found


@dataclass(frozen=True)
class RawCopy:
    """An object's copy in the raw zone, with what staging needs to know of its bytes."""

    path: str
    sha256: str
    head: bytes  # the first bytes: enough to tell a ZIP archive


#: Copies of a batch made at once. Reading, hashing and writing release the interpreter, and
#: for large images the kernel's work of writing the copy is the cost: two copies keep both
#: cores busy while extraction waits for its batch (512x512 CT: 4.7 ms a file on one thread).
COPY_THREADS = 2
#: ...for batches whose files are this large on average. A copy of a small file is mostly
#: the interpreter's work, and two threads only contend for it (10 kB files: 0.37-0.41 ms a
#: file on one thread, 0.47-0.64 ms on two).
PARALLEL_COPY_BYTES = 256 << 10


def copy_local_objects(root: Path, raw_dir: Path, objects: Sequence[ObjectInfo], *, threads: int = COPY_THREADS) -> list[RawCopy]:
    """Copy objects from a source folder into the raw zone, keeping their keys; hash them on the way.

    An object whose raw copy already has the same size and modification time is not
    copied again (a re-run reads it once, for its hash). Copies go to a temporary name
    first and are renamed, so a killed run never leaves a partial file under a real key.
    ``threads`` copies are made at once when the files average ``PARALLEL_COPY_BYTES`` or more.

    Returns
    -------
    list of RawCopy
        One per object, in the order given.
    """
    root_dir, raw = os.fspath(root), os.fspath(raw_dir)

    def copy(obj: ObjectInfo) -> RawCopy:  # str paths and os calls: pathlib costs as much as the copy of a small file
        src = os.path.join(root_dir, obj.key)
        dst = os.path.join(raw, obj.key)
        s = os.stat(src)
        try:
            d = os.stat(dst)
        except FileNotFoundError:
            d = None
        if d is not None and s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime):
            return RawCopy(dst, *_hashed_copy(dst, None, d.st_size))
        digest, head = _hashed_copy(src, dst, s.st_size, times_ns=(s.st_atime_ns, s.st_mtime_ns))
        return RawCopy(dst, digest, head)  # mtime kept: the size+mtime check above relies on it

    if threads <= 1 or len(objects) < 2 or sum(o.size for o in objects) < PARALLEL_COPY_BYTES * len(objects):
        return [copy(obj) for obj in objects]
    with ThreadPoolExecutor(threads, thread_name_prefix="raw-copy") as pool:
        return list(pool.map(copy, objects))


#: Files up to this size are read, hashed and written in one piece.
_WHOLE_FILE = 4 << 20


def _hashed_copy(src: str, dst: str | None, size: int, *, times_ns: tuple[int, int] | None = None) -> tuple[str, bytes]:
    """SHA-256 and first bytes of ``src``, copying it to ``dst`` in the same pass (if given).

    The copy is written under a temporary name and renamed (:mod:`tasks.lake.files`).
    """
    if size <= _WHOLE_FILE:
        with open(src, "rb", buffering=0) as fin:
            data = fin.readall()
        if dst is not None:
            write_atomic(dst, data, times_ns=times_ns)
        return hashlib.sha256(data).hexdigest(), data[:8]
    if dst is None:
        return sha256_file(src), _head(src)
    with writing(Path(dst)) as tmp:
        with tmp.open("wb") as fout:
            digest = sha256_file(src, copy_to=fout)
        head = _head(tmp)  # of the copy, as the hash: what extraction will read
        if times_ns is not None:
            os.utime(tmp, ns=times_ns)
    return digest, head


def _head(path: str | Path) -> bytes:
    """The first bytes of a file: enough to tell a ZIP archive."""
    with open(path, "rb") as fh:
        return fh.read(8)


def chunk(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``size`` elements.

    Raises
    ------
    ValueError
        If ``size`` is not positive.
    """
    if size < 1:
        msg = f"batch size must be at least 1, got {size}; pass --batch-size N"
        raise ValueError(msg)
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: The first batches take this fraction of both limits (1/8, 1/4, 1/2): extraction starts
#: on a small first batch while the next are staged, instead of idling while a full one
#: is copied or downloaded. Batches under RAMP_FROM files stage in moments: no ramp.
RAMP = (8, 4, 2)
RAMP_FROM = 100


def plan_batches(objects: Sequence[ObjectInfo], size: int, max_bytes: int | None = None) -> Iterator[Sequence[ObjectInfo]]:
    """Consecutive batches of at most ``size`` objects and ``max_bytes`` bytes, the first ones smaller.

    A batch holds one object at least, however large it is. With ``size`` of
    :data:`RAMP_FROM` or more, the first three batches take an eighth, a quarter and half
    of both limits (:data:`RAMP`).

    Parameters
    ----------
    objects : sequence of ObjectInfo
    size : int
        Most objects in a batch.
    max_bytes : int, optional
        Most bytes in a batch (the scratch disk a downloaded batch takes); no limit if None.

    Raises
    ------
    ValueError
        If ``size`` or ``max_bytes`` is not positive.
    """
    if size < 1:
        msg = f"batch size must be at least 1, got {size}; pass --batch-size N"
        raise ValueError(msg)
    if max_bytes is not None and max_bytes < 1:
        msg = f"batch bytes must be at least 1, got {max_bytes}; pass --batch-bytes N"
        raise ValueError(msg)
    start, index = 0, 0
    while start < len(objects):
        divisor = RAMP[index] if index < len(RAMP) and size >= RAMP_FROM else 1
        most = max(1, size // divisor)
        room = None if max_bytes is None else max(1, max_bytes // divisor)
        end, total = start + 1, objects[start].size
        while end < len(objects) and end - start < most and (room is None or total + objects[end].size <= room):
            total += objects[end].size
            end += 1
        yield objects[start:end]
        start, index = end, index + 1


def batch_id(objects: Sequence[ObjectInfo]) -> str:
    """A deterministic id for a batch: the same objects and versions give the same id.

    A re-run of the same input therefore overwrites its own Parquet files instead of
    adding new ones.
    """
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(f"{obj.key}\x1f{obj.etag}\x1e".encode())
    return digest.hexdigest()[:16]
