"""Pipeline settings: one Block per environment, and the local defaults that need none.

The environment is chosen in exactly one place: the settings block a run names (the
``settings_block`` flow parameter, or ``DICOM_ETL_SETTINGS_BLOCK``). With no block, a run
is ``local``: folders under ``./data`` and a secret kept in ``./data/.deid_secret``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.warehouse.snowflake import NETWORK_TIMEOUT
from tasks.lake.s3 import S3Access

DEFAULT_DATA_DIR = Path("data")
SECRET_ENV = "DICOM_ETL_DEID_SECRET"
#: Files per batch: each batch costs three task runs, ~50-80 ms of the Prefect server's CPU each.
DEFAULT_BATCH_SIZE = 1000
#: Bytes per batch: three batches in flight stay within ~3 GiB of scratch disk (S3 sources).
DEFAULT_BATCH_BYTES = 1 << 30


class DicomPipelineSettings(Block):
    """Where a DICOM pipeline environment reads and writes, and its de-identification key."""

    _block_type_name = "DICOM Pipeline Settings"
    _block_type_slug = "dicom-pipeline-settings"
    _description = "Source, lake, warehouse and de-identification secret of one environment."

    environment: str = Field(default="local", description="local, dev or prod.")
    source: str = Field(default="data/incoming", description="Provider folder or s3://bucket/prefix.")
    lake: str = Field(default="data/lake", description="Lake root: a folder or s3://bucket/prefix.")
    warehouse: str = Field(default="data/warehouse.duckdb", description="DuckDB file (local target).")
    dbt_target: str = Field(default="duckdb", description="profiles.yml target: duckdb or snowflake.")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, description="Most files per batch (one task per stage and batch).")
    batch_bytes: int = Field(
        default=DEFAULT_BATCH_BYTES,
        ge=1,
        description="Most bytes per batch: a batch ends at batch_size files or at this size, whichever comes "
        "first (bounds the scratch disk of downloaded batches in flight).",
    )
    deid_secret: SecretStr = Field(description="Key of the HMAC pseudonyms. Never logged.")
    compression: str = Field(
        default="local",
        description="Where previews are rendered: local (in process), deployment (compress-dicom/remote) "
        "or a deployment name compress-dicom/<name>.",
    )
    aws_credentials_block: str | None = Field(
        default=None, description="Name of the AwsCredentials block (endpoint_url for S3-compatible stores)."
    )
    provider_bucket_block: str | None = Field(default=None, description="Name of the provider's S3Bucket block.")
    lake_bucket_block: str | None = Field(default=None, description="Name of the lake's S3Bucket block.")
    # Snowflake target (dbt_target = "snowflake"): the prefect-snowflake SnowflakeConnector block
    # dbt and the raw loader use, and an endpoint override for a non-standard server (fakesnow).
    snowflake_connector_block: str = Field(
        default="dicom-etl-snowflake", description="Name of the SnowflakeConnector block of the Snowflake target."
    )
    snowflake_host: str | None = Field(default=None, description="Snowflake host; only for a non-standard endpoint.")
    snowflake_port: int | None = Field(default=None, description="Snowflake port; only for a non-standard endpoint.")
    snowflake_protocol: str | None = Field(default=None, description="https (default) or http (fakesnow).")
    snowflake_network_timeout: int = Field(
        default=NETWORK_TIMEOUT,
        ge=1,
        description="Seconds a Snowflake statement may take, the connector's retries included; "
        "a longer outage fails the load, which is then retried twice with a new session.",
    )


@dataclass(frozen=True)
class PipelineConfig:
    """The resolved settings a run uses (a Block's values, or local defaults)."""

    environment: str
    source: str
    lake: str
    warehouse: str
    dbt_target: str
    batch_size: int
    deid_secret: str
    aws_credentials_block: str | None = None
    snowflake_connector_block: str | None = None
    batch_bytes: int = DEFAULT_BATCH_BYTES

    def __repr__(self) -> str:  # never print the secret
        return (
            f"PipelineConfig(environment={self.environment!r}, source={self.source!r}, "
            f"lake={self.lake!r}, warehouse={self.warehouse!r}, dbt_target={self.dbt_target!r})"
        )


def local_secret(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The local de-identification secret: ``$DICOM_ETL_DEID_SECRET``, else a file made once.

    The file (``data/.deid_secret``, mode 0600) keeps pseudonyms stable across local
    runs; delete it and every pseudonym changes.
    """
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env
    path = data_dir / ".deid_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def resolve_config(
    settings_block: str | None = None,
    *,
    source: str | None = None,
    lake: str | None = None,
    warehouse: str | None = None,
    batch_size: int | None = None,
    batch_bytes: int | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
) -> PipelineConfig:
    """Settings for a run: the named block's values (or local defaults), then explicit overrides.

    Parameters
    ----------
    settings_block : str, optional
        Name of a saved ``DicomPipelineSettings`` block; ``$DICOM_ETL_SETTINGS_BLOCK`` if
        not given; local defaults if neither.
    source, lake, warehouse, batch_size, batch_bytes : optional
        Values that win over the block's (command-line flags, flow parameters).
    """
    name = settings_block or os.environ.get("DICOM_ETL_SETTINGS_BLOCK")
    if name:
        block = DicomPipelineSettings.load(name)
        base = PipelineConfig(
            environment=block.environment,
            source=block.source,
            lake=block.lake,
            warehouse=block.warehouse,
            dbt_target=block.dbt_target,
            batch_size=block.batch_size,
            deid_secret=block.deid_secret.get_secret_value(),
            aws_credentials_block=block.aws_credentials_block,
            snowflake_connector_block=block.snowflake_connector_block,
            batch_bytes=block.batch_bytes,
        )
    else:
        base = PipelineConfig(
            environment="local",
            source=str(data_dir / "incoming"),
            lake=str(data_dir / "lake"),
            warehouse=str(data_dir / "warehouse.duckdb"),
            dbt_target="duckdb",
            batch_size=DEFAULT_BATCH_SIZE,
            deid_secret=local_secret(data_dir),
        )
    return PipelineConfig(
        environment=base.environment,
        source=source or base.source,
        lake=lake or base.lake,
        warehouse=warehouse or base.warehouse,
        dbt_target=base.dbt_target,
        batch_size=batch_size or base.batch_size,
        deid_secret=base.deid_secret,
        aws_credentials_block=base.aws_credentials_block,
        snowflake_connector_block=base.snowflake_connector_block,
        batch_bytes=batch_bytes or base.batch_bytes,
    )


def resolve_s3_access(config: PipelineConfig) -> S3Access:
    """How a run reaches S3: the environment's AwsCredentials block, else boto3's own defaults.

    With no block, boto3 reads ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION`` as it always does.
    """
    if not config.aws_credentials_block:
        return S3Access()
    from prefect_aws import AwsCredentials

    creds = AwsCredentials.load(config.aws_credentials_block)
    secret = creds.aws_secret_access_key
    return S3Access(
        endpoint_url=creds.aws_client_parameters.endpoint_url,
        region=creds.region_name,
        access_key_id=creds.aws_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        session_token=creds.aws_session_token,
    )


@contextmanager
def temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
