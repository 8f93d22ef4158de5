"""Pipeline settings: one Block per environment, and the local defaults that need none.

The environment is chosen in exactly one place: the settings block a run names (the
``settings_block`` flow parameter, or ``DICOM_ETL_SETTINGS_BLOCK``). With no block, a run
is ``local``: ``DICOM_ETL_*`` variables, else folders under ``./data`` and a secret kept in
``./data/.deid_secret``. :func:`resolve_config` merges these layers once per flow run into
a frozen :class:`PipelineConfig` (parameters > block > environment > defaults).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tasks.errors import ConfigError
from tasks.lake.s3 import DEFAULT_MAX_CONCURRENCY, S3Access
from tasks.warehouse.snowflake import NETWORK_TIMEOUT

DEFAULT_DATA_DIR = Path("data")
SECRET_ENV = "DICOM_ETL_DEID_SECRET"
#: Files per batch: each batch costs three task runs, ~50-80 ms of the Prefect server's CPU each.
DEFAULT_BATCH_SIZE = 1000
#: Bytes per batch: three batches in flight stay within ~3 GiB of scratch disk (S3 sources).
DEFAULT_BATCH_BYTES = 1 << 30
#: The SnowflakeConnector block of the Snowflake target when the settings name none.
SNOWFLAKE_CONNECTOR_BLOCK = "dicom-etl-snowflake"


class DicomPipelineSettings(Block):
    """Where a DICOM pipeline environment reads and writes, and its de-identification key.

    A field removed here still loads from documents saved with it (``Block`` allows extra
    fields, which the pipeline does not read): ``provider_bucket_block`` and ``lake_bucket_block`` went so.
    """

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
    pixel_text: str = Field(
        default="all",
        description="Burned-in text on at-risk images: all (remove every text box), sensitive (only text that "
        "looks like PHI) or none (pixels were cleaned upstream). See docs/images-and-privacy.md.",
    )
    export_deid: bool = Field(
        default=False,
        description="Also write de-identified DICOM files (deid/<xx>/<image pseudonym>.dcm) with the "
        "warehouse's pseudonyms, UIDs and date shifts; images whose pixels are not verified clean are withheld.",
    )
    dbt_node_tasks: bool = Field(
        default=False,
        description="One Prefect task run per dbt model and test (prefect-dbt) instead of one task for the whole "
        "dbt build with a table of its nodes; costs ~10 s of API work per build.",
    )
    aws_credentials_block: str | None = Field(
        default=None, description="Name of the AwsCredentials block (endpoint_url for S3-compatible stores)."
    )
    s3_max_concurrency: int = Field(
        default=DEFAULT_MAX_CONCURRENCY,
        ge=1,
        description="S3 requests a task keeps in flight (raw copies, downloads, uploads of a batch). The default "
        "suits a laptop; 64-128 on a cloud VM in the bucket's region (docs/s3-latency.md).",
    )
    # Snowflake target (dbt_target = "snowflake"): the prefect-snowflake SnowflakeConnector block
    # dbt and the raw loader use, and an endpoint override for a non-standard server (fakesnow).
    snowflake_connector_block: str = Field(
        default=SNOWFLAKE_CONNECTOR_BLOCK, description="Name of the SnowflakeConnector block of the Snowflake target."
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


#: Run settings read from the environment when no settings block is named (block > environment).
ENV_VARS: dict[str, str] = {
    "source": "DICOM_ETL_SOURCE",
    "lake": "DICOM_ETL_LAKE",
    "warehouse": "DICOM_ETL_WAREHOUSE",
    "dbt_target": "DICOM_ETL_DBT_TARGET",
    "batch_size": "DICOM_ETL_BATCH_SIZE",
    "batch_bytes": "DICOM_ETL_BATCH_BYTES",
    "compression": "DICOM_ETL_COMPRESSION",
    "pixel_text": "DICOM_ETL_PIXEL_TEXT",
    "s3_max_concurrency": "DICOM_ETL_S3_MAX_CONCURRENCY",
    "export_deid": "DICOM_ETL_EXPORT_DEID",
    "dbt_node_tasks": "DICOM_ETL_DBT_NODE_TASKS",
    "deid_secret": SECRET_ENV,
}
BLOCK_ENV = "DICOM_ETL_SETTINGS_BLOCK"
#: The values of pixel_text, as tasks.pixels.privacy.PIXEL_TEXT_MODES (not imported: it loads pydicom)
PIXEL_TEXT_MODES = ("all", "sensitive", "none")
_INTEGER_FIELDS = ("batch_size", "batch_bytes", "s3_max_concurrency")
_BOOLEAN_FIELDS = ("export_deid", "dbt_node_tasks")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Everything a run needs to know about its environment, resolved once by :func:`resolve_config`.

    Flows pass it down (to subflows as the ``config`` parameter, where the secret shows
    as ``**********``); nothing below a flow loads a block by name.
    """

    environment: str = "local"
    #: The DicomPipelineSettings block these values came from (None: environment and defaults);
    #: a remote compress-dicom run is handed this name to resolve the same secret.
    settings_block: str | None = None
    source: str
    lake: str
    warehouse: str
    dbt_target: str = "duckdb"
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_bytes: int = DEFAULT_BATCH_BYTES
    compression: str = "local"
    #: burned-in text removal (tasks.pixels.privacy.PIXEL_TEXT_MODES)
    pixel_text: str = "all"
    export_deid: bool = False
    #: prefect-dbt's task run per dbt node, instead of one task for the whole build
    dbt_node_tasks: bool = False
    s3_max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    deid_secret: SecretStr = field(repr=False)
    aws_credentials_block: str | None = None
    snowflake_connector_block: str = SNOWFLAKE_CONNECTOR_BLOCK
    snowflake_host: str | None = None
    snowflake_port: int | None = None
    snowflake_protocol: str | None = None
    snowflake_network_timeout: int = NETWORK_TIMEOUT

    def __post_init__(self) -> None:
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if value < 1:
                msg = f"{name} must be 1 or more, got {value}; pass a positive number (default {_DEFAULTS[name]})"
                raise ConfigError(msg)
        if self.pixel_text not in PIXEL_TEXT_MODES:
            msg = f"pixel_text={self.pixel_text!r} is not a mode; use one of {', '.join(PIXEL_TEXT_MODES)} (docs/images-and-privacy.md)"
            raise ConfigError(msg)

    @property
    def secret(self) -> str:
        """The de-identification secret's value (never log it)."""
        return self.deid_secret.get_secret_value()

    @property
    def snowflake_connect(self) -> dict[str, object]:
        """Connection overrides for a non-standard Snowflake endpoint (fakesnow), only those set."""
        values = {
            "host": self.snowflake_host,
            "port": self.snowflake_port,
            "protocol": self.snowflake_protocol,
            "network_timeout": self.snowflake_network_timeout,
        }
        return {k: v for k, v in values.items() if v}

    def override(self, **parameters: object) -> PipelineConfig:
        """This configuration with the given values in place of its own (``None`` keeps its own)."""
        given = {k: v for k, v in parameters.items() if v is not None}
        return replace(self, **given) if given else self


_DEFAULTS = {"batch_size": DEFAULT_BATCH_SIZE, "batch_bytes": DEFAULT_BATCH_BYTES, "s3_max_concurrency": DEFAULT_MAX_CONCURRENCY}


def local_secret(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The local de-identification secret: ``$DICOM_ETL_DEID_SECRET``, else a file made once.

    The file (``data/.deid_secret``, mode 0600) keeps pseudonyms stable across local
    runs; delete it and every pseudonym changes.
    """
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env
    return _secret_file(data_dir)


def _secret_file(data_dir: Path) -> str:
    path = data_dir / ".deid_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def merge_config(
    parameters: Mapping[str, object],
    *,
    block: DicomPipelineSettings | None = None,
    block_name: str | None = None,
    environ: Mapping[str, str],
    data_dir: Path = DEFAULT_DATA_DIR,
) -> PipelineConfig:
    """One configuration from its layers: parameters > settings block > environment > defaults.

    Parameters
    ----------
    parameters : mapping
        Flow parameters or command-line flags; ``None`` values are not given.
    block : DicomPipelineSettings, optional
        The loaded settings block. Every field it has wins over the environment.
    block_name : str, optional
        The block's name, kept in the result for runs started elsewhere (compress-dicom).
    environ : mapping
        Environment variables (:data:`ENV_VARS`); read only for what no block gives.
    data_dir : Path, default ``data``
        Where the local defaults live: ``incoming/``, ``lake/``, ``warehouse.duckdb`` and
        the secret file ``.deid_secret`` (created only when no layer gives a secret).

    Raises
    ------
    ConfigError
        An environment variable or a parameter with an unusable value.
    """
    values: dict[str, object] = {}
    if block is not None:
        values = {f.name: getattr(block, f.name) for f in fields(PipelineConfig) if hasattr(block, f.name)}
        values["settings_block"] = block_name
    else:
        for name, var in ENV_VARS.items():
            raw = environ.get(var)
            if raw:
                values[name] = _env_value(name, var, raw)
    values.update({k: v for k, v in parameters.items() if v is not None})
    values.setdefault("source", str(data_dir / "incoming"))
    values.setdefault("lake", str(data_dir / "lake"))
    values.setdefault("warehouse", str(data_dir / "warehouse.duckdb"))
    if "deid_secret" not in values:
        values["deid_secret"] = _secret_file(data_dir)
    if not isinstance(values["deid_secret"], SecretStr):
        values["deid_secret"] = SecretStr(str(values["deid_secret"]))
    return PipelineConfig(**values)


def _env_value(name: str, var: str, raw: str) -> object:
    if name in _BOOLEAN_FIELDS:
        if raw.strip().lower() not in _BOOLEANS:
            msg = f"${var}={raw!r} is not true or false; set it to true, false, 1 or 0, or unset it"
            raise ConfigError(msg)
        return _BOOLEANS[raw.strip().lower()]
    if name not in _INTEGER_FIELDS:
        return raw
    try:
        return int(raw)
    except ValueError:
        msg = f"${var}={raw!r} is not a whole number; set it to a number of {name.removeprefix('batch_')} or unset it"
        raise ConfigError(msg) from None


def resolve_config(
    settings_block: str | None = None,
    *,
    base: PipelineConfig | None = None,
    environ: Mapping[str, str] | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
    **parameters: object,
) -> PipelineConfig:
    """The configuration of a run: parameters > settings block > environment > defaults.

    Parameters
    ----------
    settings_block : str, optional
        Name of a saved ``DicomPipelineSettings`` block; ``$DICOM_ETL_SETTINGS_BLOCK`` if
        not given; environment variables and local defaults if neither.
    base : PipelineConfig, optional
        A configuration already resolved by the calling flow (a subflow's ``config``): no
        block is loaded again, only ``parameters`` are applied on top.
    environ : mapping, optional
        Environment variables; ``os.environ`` if not given.
    **parameters
        Values that win over every other layer (``source``, ``lake``, ``warehouse``,
        ``batch_size``, ``batch_bytes``, ``compression``...); ``None`` means not given.

    Raises
    ------
    ConfigError
        No block of that name, or a setting with an unusable value.
    """
    if base is not None:
        return base.override(**parameters)
    environ = os.environ if environ is None else environ
    name = settings_block or environ.get(BLOCK_ENV) or None
    block = _load_block(name) if name else None
    return merge_config(parameters, block=block, block_name=name, environ=environ, data_dir=data_dir)


def _load_block(name: str) -> DicomPipelineSettings:
    try:
        return DicomPipelineSettings.load(name)
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        saved = saved_settings_blocks()
        msg = (
            f"no DicomPipelineSettings block named {name!r} on this Prefect server "
            f"(saved: {', '.join(saved) if saved else 'none'}); name a saved one (--settings-block, "
            "$DICOM_ETL_SETTINGS_BLOCK) or save it with `python -m flows blocks register --env ENV`"
        )
        raise ConfigError(msg) from exc


def saved_settings_blocks() -> list[str]:
    """Names of the DicomPipelineSettings blocks saved on the Prefect server (none if the type is unknown)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    slug = DicomPipelineSettings.get_block_type_slug()
    with get_client(sync_client=True) as client:
        try:
            documents = client.read_block_documents_by_type(slug, include_secrets=False)
        except (ObjectNotFound, PrefectHTTPStatusError):  # no block of this type was ever saved
            return []
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


def resolve_s3_access(config: PipelineConfig) -> S3Access:
    """How a run reaches S3: the environment's AwsCredentials block, else boto3's own defaults.

    Either way with the run's ``s3_max_concurrency`` requests in flight per task.

    With no block, boto3 reads ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION`` as it always does.
    """
    if not config.aws_credentials_block:
        return S3Access(max_concurrency=config.s3_max_concurrency)
    from prefect_aws import AwsCredentials

    creds = AwsCredentials.load(config.aws_credentials_block)
    secret = creds.aws_secret_access_key
    return S3Access(
        endpoint_url=creds.aws_client_parameters.endpoint_url,
        region=creds.region_name,
        access_key_id=creds.aws_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        session_token=creds.aws_session_token,
        max_concurrency=config.s3_max_concurrency,
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
