"""One base exception for the project and the reason codes of quarantined files."""

from __future__ import annotations

from enum import StrEnum


class DicomEtlError(Exception):
    """Base class of every error this project raises on purpose.

    ``exit_code`` is what ``python -m flows`` exits with when the error ends a command.
    """

    exit_code = 1


class UsageError(DicomEtlError):
    """An argument or parameter is wrong (a date, a size, a folder): what was given and what to pass."""

    exit_code = 2


class ConfigError(DicomEtlError):
    """A setting (flow parameter, settings block, environment variable) has an unusable value."""

    exit_code = 2


class SourceError(DicomEtlError):
    """A source (folder, bucket, prefix) cannot be listed or read."""

    exit_code = 2


class WarehouseError(DicomEtlError):
    """The warehouse build (dbt) failed."""


class SnowflakeUnreachable(WarehouseError):
    """Snowflake could not be reached, or the connection was lost (worth another try)."""


class OrchestrationError(DicomEtlError):
    """The Prefect API stopped answering and its client gave up: the run could not go on."""


class DiskFullError(DicomEtlError):
    """A folder the pipeline writes to (the lake, the scratch folder) is on a full disk."""


class CompressionError(DicomEtlError):
    """A remote compression run (the compress-dicom deployment) did not complete."""


class DeidError(DicomEtlError):
    """De-identification cannot be done as configured (no secret, unreadable rules)."""


class FileRejected(DicomEtlError):
    """A single input file cannot be used; it is quarantined, the batch goes on.

    Parameters
    ----------
    reason : Reason
        Machine-readable reason code, stored in ``ingest_errors.reason``.
    detail : str
        What was wrong, for a person. Never contains PHI values.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Reason(StrEnum):
    """Why a file was quarantined (``ingest_errors.reason``)."""

    EMPTY_FILE = "empty_file"
    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    MISSING_REQUIRED_UID = "missing_required_uid"
    DICOMDIR = "dicomdir"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    PIXEL_DECODE = "pixel_decode"
    #: pixels withheld from the shareable layer: burned-in text not removed and verified
    BURNED_IN_TEXT = "burned_in_text"
    # objects and archives (S3 and ZIP ingest)
    MISSING_OBJECT = "missing_object"
    ACCESS_DENIED = "access_denied"
    CORRUPT_ARCHIVE = "corrupt_archive"
    ZIP_BOMB = "zip_bomb"
    PATH_TRAVERSAL = "path_traversal"
    NESTED_ARCHIVE = "nested_archive"
    SYMLINK = "symlink"
    TOO_DEEP = "too_deep"
    BAD_VALUE = "bad_value"
