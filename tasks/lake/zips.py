"""ZIP archives of studies, expanded member by member, safely.

Lineage: a member's source key is ``<archive key>!/<member path>`` (e.g.
``site1/study.zip!/DICOM/IM0001``) and its ETag is the archive's, so every row of the
raw tables points back to the object at the source and the place inside it.

Safety: members are written under generated names (never their own paths), so a
member named ``../../etc/passwd`` cannot escape; such members are rejected with reason
``path_traversal``. Expansion is bounded: the declared total, each member and each
member's compression ratio are capped, and the bytes actually written are counted
against the same caps (declared sizes can lie): an archive over a cap is rejected as
``zip_bomb``. Nested archives are not expanded: such members are rejected with reason
``nested_archive``.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tasks.errors import FileRejected, Reason

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
MEMBER_SEPARATOR = "!/"


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on expansion. Defaults suit studies of a few thousand images."""

    max_total_bytes: int = 8 << 30
    max_member_bytes: int = 2 << 30
    max_ratio: float = 200.0
    max_members: int = 100_000


@dataclass
class ExpandedArchive:
    """The members of one archive: extracted files and rejected members."""

    members: list[tuple[str, Path, int]] = field(default_factory=list)  # (member key, local path, size)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (member key, reason, detail)


def is_zip(path: Path) -> bool:
    """Whether a file starts like a ZIP archive (a DICOM file never does: 128-byte preamble + DICM)."""
    with path.open("rb") as fh:
        return fh.read(4) in ZIP_MAGIC


def member_key(archive_key: str, member: str) -> str:
    """Source key of a member: ``<archive key>!/<member path>``."""
    return f"{archive_key}{MEMBER_SEPARATOR}{member}"


def _unsafe(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (bool(parts) and ":" in parts[0])


def expand_archive(path: Path, archive_key: str, dest: Path, *, limits: ArchiveLimits = ArchiveLimits()) -> ExpandedArchive:
    """Expand a ZIP archive into ``dest`` under generated names.

    Parameters
    ----------
    path : Path
        The archive on local disk.
    archive_key : str
        Its key at the source (lineage of the members).
    dest : Path
        Scratch folder for the members; created.
    limits : ArchiveLimits

    Returns
    -------
    ExpandedArchive
        Members written (hidden files, folders and ``__MACOSX`` litter skipped) and
        members rejected with a reason (``path_traversal``, ``nested_archive``,
        ``unreadable``).

    Raises
    ------
    FileRejected
        ``zip_bomb`` when a cap is exceeded, ``corrupt_archive`` when the archive cannot
        be read. Nothing of the archive is kept then.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileRejected(Reason.CORRUPT_ARCHIVE, f"cannot open the ZIP archive: {exc}") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_members:
            raise FileRejected(Reason.ZIP_BOMB, f"{len(infos)} members, more than the cap of {limits.max_members}")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise FileRejected(Reason.ZIP_BOMB, f"expands to {declared} bytes, more than the cap of {limits.max_total_bytes}")
        out = ExpandedArchive()
        dest.mkdir(parents=True, exist_ok=True)
        written_total = 0
        for index, info in enumerate(infos):
            name = info.filename
            key = member_key(archive_key, name)
            base = PurePosixPath(name.replace("\\", "/")).name
            if base.startswith(".") or name.startswith("__MACOSX/"):
                continue
            if _unsafe(name):
                out.rejected.append((key, Reason.PATH_TRAVERSAL, "member path leaves the archive root; not extracted"))
                continue
            if info.file_size > limits.max_member_bytes or (
                info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 1 << 20
            ):
                raise FileRejected(Reason.ZIP_BOMB, f"member {index} expands {info.file_size} bytes from {info.compress_size}")
            target = dest / f"{index:06d}"
            try:
                with zf.open(info) as src, target.open("wb") as dst:
                    written = 0
                    while block := src.read(1 << 20):
                        written += len(block)
                        written_total += len(block)
                        if written > max(info.file_size, 0) or written_total > limits.max_total_bytes:
                            raise FileRejected(Reason.ZIP_BOMB, f"member {index} writes more bytes than it declares")
                        dst.write(block)
            except FileRejected:
                shutil.rmtree(dest, ignore_errors=True)
                raise
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
                # encrypted members, unsupported compression, bad CRC: this member only
                target.unlink(missing_ok=True)
                out.rejected.append((key, Reason.UNREADABLE, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            if is_zip(target):
                target.unlink()
                out.rejected.append((key, Reason.NESTED_ARCHIVE, "a ZIP inside a ZIP is not expanded; send members directly"))
                continue
            out.members.append((key, target, written))
    return out
