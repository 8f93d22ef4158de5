"""Where a run reads (its scope): the provider's root, and the narrower part of it one run lists.

An object's key is its path relative to the provider's root (the configured source),
whatever narrower part a run reads: one day of a backfill, the prefix an S3 notification
named, a ``{date:...}`` partition. So one object has one key in the raw zone, the
manifest and the tables, and a narrower run sees exactly the keys a full run would.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from tasks.errors import SourceError
from tasks.lake.s3 import is_s3_url, parse_s3_url, render_prefix
from tasks.lake.storage import ObjectInfo


@dataclass(frozen=True)
class SourceScope:
    """What a run reads, and the root its keys are relative to.

    Parameters
    ----------
    root : str
        The provider's root (a folder or ``s3://bucket/prefix``): keys are relative to it.
    location : str
        What the run lists: the root itself or a folder/prefix under it.
    prefix : str
        ``location`` relative to ``root``: ``""`` or a path ending in ``/``.
    """

    root: str
    location: str
    prefix: str = ""


def template_root(source: str) -> str:
    """The fixed part of a source with a ``{date:...}`` partition: its folder before the first ``{date``.

    Examples
    --------
    >>> template_root("s3://b/in/{date:%Y/%m/%d}/")
    's3://b/in/'
    >>> template_root("data/in/day-{date:%d}")
    'data/in/'
    """
    if "{date" not in source:
        return source
    head = source[: source.index("{date")]
    cut = head.rfind("/")
    if cut < 0:
        return "."
    return head[: cut + 1] if is_s3_url(head) or cut > 0 else "/"


def resolve_scope(source: str, *, day: date | None = None, within: str | None = None) -> SourceScope:
    """The provider root of ``source`` and the part of it one run reads.

    Parameters
    ----------
    source : str
        The configured source: a folder or ``s3://bucket/prefix``, optionally with a
        ``{date:FORMAT}`` partition (``s3://b/in/{date:%Y/%m/%d}/``), whose fixed part
        before the date is the root.
    day : date, optional
        The partition to read when ``source`` has a ``{date...}`` part.
    within : str, optional
        A narrower part to read: a path relative to the (rendered) source
        (``2024-01-01/``), or a full location under the root (an event's
        ``s3://bucket/prefix/`` or folder).

    Returns
    -------
    SourceScope

    Raises
    ------
    SourceError
        If the source has a ``{date}`` part and no ``day`` is given, or ``within`` is
        outside the root or climbs out of it (``..``).
    """
    root = template_root(source)
    location = render_prefix(source, day=day)
    if within:
        if is_s3_url(within) or Path(within).is_absolute():
            location = within
        elif ".." in within.replace("\\", "/").split("/"):
            msg = f"{within!r} climbs out of the source {source!r}; pass a path under it without '..'"
            raise SourceError(msg)
        else:
            location = posixpath.join(location.rstrip("/"), within) if is_s3_url(location) else str(Path(location) / within)
    prefix = _relative_prefix(root, location)
    if prefix is None:
        msg = (
            f"{within or location!r} is not under the source {root!r}: keys are relative to the source, so a run "
            "reads only inside it; pass a location under it, or make the source (--source or the settings "
            "block's source) the folder or prefix that holds it"
        )
        raise SourceError(msg)
    return SourceScope(root=root, location=location, prefix=prefix)


def _relative_prefix(root: str, location: str) -> str | None:
    """``location`` relative to ``root`` (``""`` or ending in ``/``); None if it is not under it."""
    if is_s3_url(root) != is_s3_url(location):
        return None
    if is_s3_url(root):
        base, sub = parse_s3_url(root), parse_s3_url(location)
        if base.bucket != sub.bucket or not sub.prefix.startswith(base.prefix):
            return None
        return sub.prefix[len(base.prefix) :]
    base_path, sub_path = Path(root).resolve(), Path(location).resolve()
    if not sub_path.is_relative_to(base_path):
        return None
    rel = sub_path.relative_to(base_path).as_posix()
    return "" if rel == "." else f"{rel}/"


def keys_under(objects: Sequence[ObjectInfo], prefix: str) -> list[ObjectInfo]:
    """Objects listed at a location, their keys made relative to the root (``prefix`` + key)."""
    if not prefix:
        return list(objects)
    return [replace(o, key=prefix + o.key) for o in objects]
