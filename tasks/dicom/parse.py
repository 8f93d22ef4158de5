"""A lean reader for the common shape of DICOM file: Part 10, little endian, defined lengths.

``pydicom.dcmread`` is general and careful, and most of extraction's time went into it.
Most files a provider sends are the plain case: 128-byte preamble, ``DICM``, an explicit
VR little endian meta group, then an explicit or implicit VR little endian data set whose
elements all have defined lengths (except encapsulated pixel data, whose fragments it
hops over). For exactly that case :func:`parse_simple` splits the
bytes into pydicom's own raw elements (the same ``RawDataElement`` tuples ``dcmread``
builds) in one tight loop; anything else (no preamble, big endian, deflate, other
undefined lengths, odd VR bytes) returns ``None`` and the caller uses
``dcmread``. Values are decoded afterwards by :mod:`tasks.dicom.header` either way, and the
tests compare both paths with pydicom and dcmtk.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import AllTransferSyntaxes

from tasks.compat import raw_element_factory

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
#: Compressed transfer syntaxes pydicom knows: explicit VR little endian around encapsulated pixel data.
ENCAPSULATED = frozenset(str(uid) for uid in AllTransferSyntaxes if uid.is_encapsulated and not uid.is_deflated)
#: VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"})
SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
     b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
VR_TEXT = {vr: vr.decode() for vr in LONG_VRS | SHORT_VRS}
_HEADER = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHI")
_LONG_LENGTH = struct.Struct("<I")
#: Values shorter than this are copied out of a mapped file; longer ones stay views.
MAPPED_INLINE = 1 << 16
#: How raw elements are built: ``tuple.__new__`` without the namedtuple's Python-level
#: constructor (a third of the cost of an element here), when pydicom's shape allows it.
_new_raw, _DEFAULTS = raw_element_factory()


def parse_simple(data: bytes | memoryview) -> Dataset | None:
    """Parse a plain Part 10 little-endian file into raw elements, or ``None`` if it isn't one.

    Parameters
    ----------
    data : bytes or memoryview
        The whole file; a memoryview of a mapped file (large files) keeps bulk values
        (pixel data) as views of the map instead of copies.

    Returns
    -------
    pydicom.dataset.Dataset or None
        A dataset of ``RawDataElement`` (values not yet converted) with ``file_meta``,
        as ``dcmread`` would return for this file; ``None`` when the file needs
        ``dcmread``'s general reader.
    """
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    meta, offset = _read_elements(data, 132, explicit=True, meta=True)
    if meta is None:
        return None
    ts_elem = meta.get(0x00020010)
    if ts_elem is None or ts_elem.value is None:
        return None
    ts = ts_elem.value.decode("ascii", "replace").rstrip("\x00 ")
    if ts not in (EXPLICIT_LE, IMPLICIT_LE) and ts not in ENCAPSULATED:
        return None
    explicit = ts != IMPLICIT_LE
    if not explicit and len(data) >= offset + 6 and data[offset + 4 : offset + 6] in VR_TEXT:
        return None  # says implicit but looks explicit: dcmread knows how to cope
    elements, end = _read_elements(data, offset, explicit=explicit, meta=False)
    if elements is None:
        return None
    ds = Dataset(elements)
    ds.file_meta = FileMetaDataset(meta)
    ds.set_original_encoding(not explicit, True, None)
    return ds


def _read_elements(
    data: bytes | memoryview, offset: int, *, explicit: bool, meta: bool
) -> tuple[dict[int, RawDataElement] | None, int]:
    """Split elements from ``offset``: the meta group only (``meta``) or to the end of the data."""
    out: dict[int, RawDataElement] = {}
    size = len(data)
    unpack_header = _HEADER.unpack_from
    unpack_implicit = _IMPLICIT.unpack_from
    unpack_long = _LONG_LENGTH.unpack_from
    implicit = not explicit
    mapped = isinstance(data, memoryview)
    new_raw, tail = _new_raw, _DEFAULTS
    while offset + 8 <= size:
        if explicit:
            group, elem, vr_bytes, length = unpack_header(data, offset)
            if meta and group != 0x0002:
                break
            vr = VR_TEXT.get(vr_bytes)
            if vr is None or group == 0xFFFE:
                return None, offset
            if vr_bytes in LONG_VRS:
                if offset + 12 > size:
                    return None, offset
                (length,) = unpack_long(data, offset + 8)
                start = offset + 12
            else:
                start = offset + 8
        else:
            group, elem, length = unpack_implicit(data, offset)
            if group == 0xFFFE:
                return None, offset
            vr = None
            start = offset + 8
        tag = group << 16 | elem
        if length == UNDEFINED_LENGTH:
            if meta or tag != PIXEL_DATA or vr not in (None, "OB", "OW"):
                return None, offset
            end = _encapsulated_end(data, start)  # compressed pixel data: fragments, then a delimiter
            if end is None:
                return None, offset
            value = data[start:end]
            out[tag] = new_raw(RawDataElement, (BaseTag(tag), vr, length, value, start, implicit, True) + tail)
            offset = end + 8
            continue
        end = start + length
        value = data[start:end]  # shorter than ``length`` when the file is cut: reported later
        if mapped and length < MAPPED_INLINE:
            value = bytes(value)  # header values as bytes; only bulk values stay views of the map
        out[tag] = new_raw(RawDataElement, (BaseTag(tag), vr, length, value, start, implicit, True) + tail)
        offset = end
    return out, offset


def _encapsulated_end(data: bytes | memoryview, offset: int) -> int | None:
    """Where the sequence delimiter of encapsulated pixel data starting at ``offset`` is.

    Hops over the items (basic offset table, fragments) by their lengths, touching only
    their 8-byte headers; ``None`` if anything else is found or the data ends first.
    """
    unpack = _IMPLICIT.unpack_from
    size = len(data)
    while offset + 8 <= size:
        group, elem, length = unpack(data, offset)
        if group != 0xFFFE:
            return None
        if elem == 0xE0DD:
            return offset
        if elem != 0xE000 or length == UNDEFINED_LENGTH or offset + 8 + length > size:
            return None
        offset += 8 + length
    return None
