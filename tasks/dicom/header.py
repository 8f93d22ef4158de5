"""Decode a parsed header straight from its raw elements: DICOM JSON and column values.

pydicom parses a file into *raw* elements (tag, VR, bytes) and converts a value only when
it is asked for, through several layers of objects. Extraction needs every value of every
instance, so it decodes the raw bytes here in one pass, with the same rules as pydicom's
converters (character sets, padding, multi-values) and without building those objects.

One pass gives two views of each element:

- the *text view* used by the raw tables: strings as written (DS/IS as their original
  text, PN with all its ``=`` groups), binary numbers as ``int``/``float``, lists of them;
- the PS3.18 Annex F *JSON model* of the whole dataset (sequences nested, private
  elements kept, binary values above a cap replaced by a ``BulkDataURI``).

Elements whose VR needs context (implicit VR private tags, ``US or SS``, ``UN`` that pydicom
re-types) take pydicom's own path, so the result always equals ``Dataset.to_json_dict``.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.values import TEXT_VR_DELIMS
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from tasks.errors import FileRejected, Reason
from tasks.compat import dataset_elements

UNDEFINED_LENGTH = 0xFFFFFFFF
DEFAULT_ENCODING = "iso8859"
CHARSET_TAG = 0x00080005
#: Deepest sequence nesting accepted; real files stay below ~10 levels.
MAX_DEPTH = 32

#: VRs whose value is bytes, shown as InlineBinary or BulkDataURI.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Text VRs in the Specific Character Set, split on ``\\``, each value right-stripped.
TEXT_MULTI = frozenset({"SH", "LO", "UC"})
#: Text VRs in the Specific Character Set, never split.
TEXT_SINGLE = frozenset({"LT", "ST", "UT"})
#: Default-repertoire VRs: the whole value right-stripped, then split on ``\\``.
ASCII_MULTI = frozenset({"AS", "CS", "DA", "DT", "TM", "DS", "IS"})
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
FAST_VRS = BINARY_VRS | TEXT_MULTI | TEXT_SINGLE | ASCII_MULTI | set(NUMBER_FORMATS) | {
    "AE", "UI", "UR", "PN", "AT", "SQ"
}
#: VRs decoded here from raw bytes; ``UN`` and ``SQ`` take pydicom's path.
DIRECT_VRS = FAST_VRS - {"UN", "SQ"}
#: Default-repertoire VRs split on ``\\`` as they are (UI), or each value stripped too (DS, IS).
_ASCII_SPLIT = ASCII_MULTI | {"UI"}
#: One binary number, the common case of US/UL/FL...: compiled once, by VR and byte order.
_ONE_NUMBER = {(vr, little): struct.Struct(("<" if little else ">") + fmt) for vr, fmt in NUMBER_FORMATS.items() for little in (True, False)}

#: ``(vr, values)``: the text view of one element; ``values`` is ``None`` for bytes and sequences.
TextView = tuple[str, list[Any] | None]
BulkHandler = Callable[[int, str, int], str]


def drop_uri(tag: int, vr: str, length: int) -> str:
    """The ``BulkDataURI`` of a dropped binary value: its tag and length, no bytes."""
    return f"urn:dicom-etl:dropped:{tag:08X}:{length}"


def decode_dataset(
    ds: Dataset,
    *,
    bulk_threshold: int = 1024,
    text: dict[int, TextView] | None = None,
    encodings: list[str] | None = None,
    depth: int = 0,
) -> dict[str, Any]:
    """The DICOM JSON model (PS3.18 F) of a dataset, decoded from its raw elements.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset as read by ``dcmread`` (raw elements), or built in memory.
    bulk_threshold : int, default 1024
        Longest binary value, in bytes, kept inline as base64; longer ones become a
        ``BulkDataURI`` naming the tag and length (:func:`drop_uri`).
    text : dict, optional
        When given, filled with the text view ``tag -> (vr, values)`` of the dataset's
        own (top-level) elements.
    encodings : list of str, optional
        Python encodings inherited from the enclosing dataset (sequence items).
    depth : int, default 0
        Nesting level, for the :data:`MAX_DEPTH` guard.

    Returns
    -------
    dict
        ``{"GGGGEEEE": {"vr": ..., "Value" | "InlineBinary" | "BulkDataURI": ...}}``.

    Raises
    ------
    FileRejected
        ``truncated`` when a value is shorter than its declared length, ``too_deep``
        when sequences nest deeper than :data:`MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        msg = f"sequences are nested more than {MAX_DEPTH} levels deep"
        raise FileRejected(Reason.TOO_DEEP, msg)
    elements = dataset_elements(ds)  # the raw elements; Dataset.__getitem__ would convert each one
    charset = elements.get(CHARSET_TAG)
    if charset is not None:
        encodings = convert_encodings(_charset_terms(ds, charset))
    encodings = encodings or [DEFAULT_ENCODING]
    body: dict[str, Any] = {}
    # file order, as pydicom's to_json_dict; a valid file is in tag order already
    for tag, elem in elements.items():
        key = "%08X" % tag
        if isinstance(elem, RawDataElement):
            value, length = elem.value, elem.length
            if value is not None and length != UNDEFINED_LENGTH and len(value) < length:
                _check_length(elem)
            vr = elem.VR or _dictionary_vr(tag)
            if value is None and vr in BINARY_VRS and length not in (0, UNDEFINED_LENGTH):
                # deferred by dcmread (a large file): never read, only described
                body[key] = {"vr": vr, "BulkDataURI": drop_uri(tag, vr, length)}
                if text is not None:
                    text[tag] = (vr, None)
                continue
            if vr in DIRECT_VRS:
                view, json_elem = _decode_raw(elem, vr, encodings, bulk_threshold)
                body[key] = json_elem
                if text is not None:
                    text[tag] = view
                continue
            elem = ds[tag]  # context-dependent VR or a sequence: pydicom converts it
        view, json_elem = _decode_element(elem, encodings, bulk_threshold, depth)
        body[key] = json_elem
        if text is not None:
            text[tag] = view
    return body


def _charset_terms(ds: Dataset, elem: RawDataElement | DataElement) -> list[str]:
    if isinstance(elem, RawDataElement):
        raw = (elem.value or b"").decode(DEFAULT_ENCODING).rstrip(" \x00")
        return [v.strip() for v in raw.split("\\")] if raw else []
    value = elem.value
    return [str(v) for v in value] if isinstance(value, (list, MultiValue)) else ([str(value)] if value else [])


def _check_length(elem: RawDataElement) -> None:
    if elem.length != UNDEFINED_LENGTH and elem.value is not None and len(elem.value) < elem.length:
        msg = f"element ({elem.tag:08X}) declares {elem.length} bytes but the file ends after {len(elem.value)}"
        raise FileRejected(Reason.TRUNCATED, msg)


def _dictionary_vr(tag: int) -> str | None:
    if tag >> 16 & 1 or tag & 0xFFFF == 0:
        return None  # private and group-length tags: pydicom's rules apply
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if vr in FAST_VRS else None


def _decode_raw(elem: RawDataElement, vr: str, encodings: list[str], bulk_threshold: int) -> tuple[TextView, dict]:
    raw = elem.value or b""
    values: list[Any]
    # the checks in order of how often they match in a typical header
    if vr in _ASCII_SPLIT:
        values = raw.decode(DEFAULT_ENCODING).rstrip(" \x00").split("\\")
        if vr == "DS" or vr == "IS":
            values = [v.strip() for v in values]
    elif vr in TEXT_MULTI:
        values = [v.rstrip("\x00 ") for v in _decode_text(raw, encodings).split("\\")]
    elif vr in NUMBER_FORMATS:
        one = _ONE_NUMBER[vr, elem.is_little_endian]
        if len(raw) == one.size:
            values = list(one.unpack(raw))
        else:
            count = len(raw) // one.size
            order = "<" if elem.is_little_endian else ">"
            values = list(struct.unpack(f"{order}{count}{NUMBER_FORMATS[vr]}", raw[: count * one.size]))
    elif vr in BINARY_VRS:
        return (vr, None), _binary_json(elem.tag, vr, raw, bulk_threshold)
    elif vr == "AT":
        order = "<" if elem.is_little_endian else ">"
        count = len(raw) // 4
        pairs = struct.unpack(f"{order}{count * 2}H", raw[: count * 4])
        values = [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]
    elif vr == "PN":
        values = _decode_pn(raw, encodings)
    elif vr in TEXT_SINGLE:
        values = [_decode_text(raw, encodings).rstrip("\x00 ")]
    elif vr == "AE":
        values = [v.strip() for v in raw.decode(DEFAULT_ENCODING).split("\\")]
    else:  # UR
        values = [raw.decode(DEFAULT_ENCODING).rstrip()]
    if len(values) == 1 and values[0] == "":
        values = []
    return (vr, values), _value_json(vr, values)


def _decode_text(raw: bytes, encodings: list[str]) -> str:
    if len(encodings) == 1 and b"\x1b" not in raw:
        try:
            return raw.decode(encodings[0])
        except UnicodeDecodeError:
            pass  # pydicom's decoder replaces what it cannot decode, as pydicom would
    return decode_bytes(raw, encodings, TEXT_VR_DELIMS)


def _decode_pn(raw: bytes, encodings: list[str]) -> list[str]:
    stripped = raw.rstrip(b"\x00 ")
    if b"\x1b" in stripped or len(encodings) > 1:
        # ISO 2022 escapes: pydicom decodes each "=" group on its own
        value = _pn_convert(stripped, encodings)
        return [_pn_text(v) for v in value]
    decoded = _decode_text(stripped, encodings)
    return [_strip_groups(v) for v in decoded.split("\\")]


def _pn_convert(raw: bytes, encodings: list[str]) -> list[PersonName]:
    from pydicom.values import convert_PN

    value = convert_PN(raw, encodings)
    return list(value) if isinstance(value, MultiValue) else [value]


def _strip_groups(name: str) -> str:
    groups = name.split("=")
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _pn_text(name: PersonName) -> str:
    return "=".join(name.components)


def _binary_json(tag: int, vr: str, raw: bytes, bulk_threshold: int) -> dict[str, Any]:
    if not raw:
        return {"vr": vr}
    if len(raw) > bulk_threshold:
        return {"vr": vr, "BulkDataURI": drop_uri(tag, vr, len(raw))}
    return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}


def _value_json(vr: str, values: list[Any]) -> dict[str, Any]:
    if not values:
        return {"vr": vr}
    if vr == "PN":
        out: list[Any] = [_pn_json(v) for v in values]
    elif vr == "DS":
        out = [_ds_number(v) for v in values]
    elif vr == "IS":
        out = [_is_number(v) for v in values]
    elif vr in ("FL", "FD"):
        out = [v if math.isfinite(v) else str(v) for v in values]  # NaN is not JSON
    else:
        out = values
    return {"vr": vr, "Value": out}


def _pn_json(name: str) -> dict[str, str]:
    groups = name.split("=")
    comps = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        comps["Ideographic"] = groups[1]
    if len(groups) > 2:
        comps["Phonetic"] = groups[2]
    return comps


def _ds_number(text: str) -> float | str | None:
    if not text.strip():
        return None
    try:
        number = float(text)
    except ValueError:
        return text  # kept as written rather than lost
    return number if math.isfinite(number) else text


def _is_number(text: str) -> int | str | None:
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() else text


def _decode_element(elem: DataElement, encodings: list[str], bulk_threshold: int, depth: int) -> tuple[TextView, dict]:
    """pydicom's path, for elements that needed context to convert (and sequences)."""
    vr = elem.VR
    if vr == "SQ":
        items = elem.value or Sequence()
        return (vr, None), {
            "vr": vr,
            **(
                {"Value": [decode_dataset(item, bulk_threshold=bulk_threshold, encodings=encodings, depth=depth + 1) for item in items]}
                if items
                else {}
            ),
        }
    value = elem.value
    if isinstance(value, (bytes, bytearray)) or value is None and vr in BINARY_VRS | {"OB or OW", "US or OW"}:
        return (vr, None), _binary_json(int(elem.tag), vr, bytes(value or b""), bulk_threshold)
    try:
        json_elem = elem.to_json_dict(None, bulk_threshold)
    except (TypeError, ValueError) as exc:  # a value pydicom cannot put into JSON
        return (vr, _text_values(value)), {"vr": vr, "Value": [str(exc)[:200]]}
    return (vr, _text_values(value)), json_elem


def _text_values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, MultiValue, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, PersonName):
            out.append(_pn_text(v))
        elif getattr(v, "original_string", None) is not None:
            out.append(str(v.original_string).strip())
        elif isinstance(v, (bytes, bytearray)):
            out.append(None)
        elif isinstance(v, (int, float, str)):
            out.append(v)
        else:
            out.append(str(v))
    return out
