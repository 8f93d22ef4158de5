"""Create or update the block documents of one environment (``local``, ``dev``, ``prod``).

Values come from a TOML file (a table per environment) and from environment variables,
which win. Block names follow the environment, so a run picks its environment in one
place, the settings block name ``dicom-settings-<env>``::

    dicom-settings-<env>    DicomPipelineSettings (source, lake, warehouse, secret, block names)
    dicom-aws-<env>         AwsCredentials (endpoint_url for S3-compatible stores)
    dicom-provider-<env>    S3Bucket of the provider, when the source is s3://
    dicom-lake-<env>        S3Bucket of the lake, when the lake is s3://
    dicom-snowflake-<env>   SnowflakeCredentials and SnowflakeConnector, when an account is given

Example ``environments.toml``::

    [dev]
    source = "s3://provider-bucket/incoming"
    lake = "s3://our-raw-bucket/dicom"
    aws_endpoint_url = "http://127.0.0.1:5000"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import DicomEtlError

ENVIRONMENTS = ("local", "dev", "prod")
SECRET_FIELDS = frozenset({"deid_secret", "aws_secret_access_key", "aws_session_token", "snowflake_password"})
#: setting -> environment variable that overrides it
ENV_VARS = {
    "source": "DICOM_ETL_SOURCE",
    "lake": "DICOM_ETL_LAKE",
    "warehouse": "DICOM_ETL_WAREHOUSE",
    "dbt_target": "DICOM_ETL_DBT_TARGET",
    "batch_size": "DICOM_ETL_BATCH_SIZE",
    "s3_max_concurrency": "DICOM_ETL_S3_MAX_CONCURRENCY",
    "deid_secret": "DICOM_ETL_DEID_SECRET",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "aws_region": "AWS_REGION",
    "snowflake_account": "SNOWFLAKE_ACCOUNT",
    "snowflake_user": "SNOWFLAKE_USER",
    "snowflake_password": "SNOWFLAKE_PASSWORD",
    "snowflake_role": "SNOWFLAKE_ROLE",
    "snowflake_database": "SNOWFLAKE_DATABASE",
    "snowflake_warehouse": "SNOWFLAKE_WAREHOUSE",
    "snowflake_schema": "SNOWFLAKE_SCHEMA",
    # a Snowflake-compatible endpoint other than <account>.snowflakecomputing.com:443 (fakesnow)
    "snowflake_host": "SNOWFLAKE_HOST",
    "snowflake_port": "SNOWFLAKE_PORT",
    "snowflake_protocol": "SNOWFLAKE_PROTOCOL",
}
#: what each setting is, for ``blocks register --help``
DESCRIPTIONS = {
    "source": "provider folder or s3://bucket/prefix (default data/incoming)",
    "lake": "lake folder or s3://bucket/prefix (default data/lake)",
    "warehouse": "DuckDB file (default data/warehouse.duckdb)",
    "dbt_target": "duckdb or snowflake (default snowflake when SNOWFLAKE_ACCOUNT is set, else duckdb)",
    "batch_size": "most files per batch (default 1000)",
    "s3_max_concurrency": "S3 requests in flight per task (default 16; 64-128 on a cloud VM)",
    "deid_secret": "key of the pseudonyms (required except for local; never printed)",
    "aws_endpoint_url": "S3-compatible endpoint (MinIO, moto)",
    "snowflake_account": "Snowflake account: saves dicom-snowflake-ENV",
    "snowflake_host": "Snowflake host, for a non-standard endpoint",
    "snowflake_port": "Snowflake port, for a non-standard endpoint",
    "snowflake_protocol": "https (default) or http (fakesnow)",
}


def variables_help() -> str:
    """Every variable ``blocks register`` reads, with its TOML key, one per line (for ``--help``)."""
    lines = ["variables read (each wins over the TOML key of the same name in lowercase):"]
    for key, var in ENV_VARS.items():
        about = DESCRIPTIONS.get(key, "")
        lines.append(f"  {var:<24} {key:<22} {about}".rstrip())
    return "\n".join(lines)


class RegistrationError(DicomEtlError):
    """The values given cannot make an environment's blocks."""


@dataclass(frozen=True)
class SavedBlock:
    """A block document that was created or updated; ``fields`` never holds secret values."""

    block_type: str
    name: str
    fields: dict[str, str]


def collect_values(env: str, *, environ: Mapping[str, str], config_file: Path | None = None) -> dict[str, str]:
    """The settings of an environment: the config file's table, then environment variables.

    Raises
    ------
    RegistrationError
        Unknown environment, unreadable file, or unknown keys in the file.
    """
    if env not in ENVIRONMENTS:
        msg = f"unknown environment {env!r}; use one of {', '.join(ENVIRONMENTS)}"
        raise RegistrationError(msg)
    values: dict[str, str] = {}
    if config_file is not None:
        try:
            table = tomllib.loads(config_file.read_text()).get(env, {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            msg = f"cannot read the config file {str(config_file)!r}: {exc}; pass a TOML file with a [{env}] table"
            raise RegistrationError(msg) from exc
        unknown = sorted(set(table) - set(ENV_VARS))
        if unknown:
            msg = f"unknown keys {unknown} in [{env}] of {str(config_file)!r}; known keys: {', '.join(ENV_VARS)}"
            raise RegistrationError(msg)
        values.update({k: str(v) for k, v in table.items()})
    values.update({k: environ[v] for k, v in ENV_VARS.items() if environ.get(v)})
    return values


def _shown(fields: Mapping[str, object]) -> dict[str, str]:
    return {k: ("***" if k in SECRET_FIELDS or "secret" in k or "password" in k else str(v)) for k, v in fields.items() if v}


def register_environment(env: str, values: Mapping[str, str], *, local_secret: str | None = None) -> list[SavedBlock]:
    """Save (create or overwrite) the block documents of an environment.

    Parameters
    ----------
    env : {"local", "dev", "prod"}
    values : mapping
        From :func:`collect_values`.
    local_secret : str, optional
        De-identification secret to use for ``local`` when none is given.

    Returns
    -------
    list of SavedBlock
        What was saved, secrets masked.
    """
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks.settings import DicomPipelineSettings

    secret = values.get("deid_secret") or (local_secret if env == "local" else None)
    if not secret:
        msg = f"no de-identification secret for {env!r}; set DICOM_ETL_DEID_SECRET (never put it in a shared file)"
        raise RegistrationError(msg)
    saved: list[SavedBlock] = []
    aws_name = None
    aws_keys = ("aws_endpoint_url", "aws_access_key_id", "aws_region")
    if any(values.get(k) for k in aws_keys):
        aws_name = f"dicom-aws-{env}"
        creds = AwsCredentials(
            aws_access_key_id=values.get("aws_access_key_id"),
            aws_secret_access_key=values.get("aws_secret_access_key"),
            aws_session_token=values.get("aws_session_token"),
            region_name=values.get("aws_region"),
            aws_client_parameters=AwsClientParameters(endpoint_url=values.get("aws_endpoint_url")),
        )
        creds.save(aws_name, overwrite=True)
        saved.append(SavedBlock("aws-credentials", aws_name, _shown({k: values.get(k) for k in (*aws_keys, "aws_secret_access_key")})))
    # S3Bucket blocks for the Prefect UI and other flows; the pipeline itself reads s3:// URLs
    for role, location in (("provider", values.get("source")), ("lake", values.get("lake"))):
        if location and location.startswith("s3://"):
            bucket, _, folder = location[5:].partition("/")
            name = f"dicom-{role}-{env}"
            block = S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=AwsCredentials.load(aws_name) if aws_name else AwsCredentials())
            block.save(name, overwrite=True)
            saved.append(SavedBlock("s3-bucket", name, {"bucket_name": bucket, "bucket_folder": folder}))
    snowflake_name = None
    if values.get("snowflake_account"):
        from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials

        snowflake_name = f"dicom-snowflake-{env}"
        sf_creds = SnowflakeCredentials(
            account=values["snowflake_account"], user=values.get("snowflake_user"),
            password=values.get("snowflake_password"), role=values.get("snowflake_role"),
        )
        sf_creds.save(snowflake_name, overwrite=True)
        SnowflakeConnector(
            credentials=SnowflakeCredentials.load(snowflake_name), database=values.get("snowflake_database", "DICOM"),
            warehouse=values.get("snowflake_warehouse", "COMPUTE_WH"), schema=values.get("snowflake_schema", "RAW"),
        ).save(snowflake_name, overwrite=True)
        saved.append(SavedBlock("snowflake-connector", snowflake_name,
                                _shown({k: values.get(k) for k in ENV_VARS if k.startswith("snowflake_")})))
    settings = settings_fields(env, values, aws_block=aws_name, snowflake_block=snowflake_name)
    DicomPipelineSettings(deid_secret=secret, **settings).save(f"dicom-settings-{env}", overwrite=True)
    saved.append(SavedBlock("dicom-pipeline-settings", f"dicom-settings-{env}", _shown(settings | {"deid_secret": secret})))
    return saved


def settings_fields(
    env: str,
    values: Mapping[str, str],
    *,
    aws_block: str | None = None,
    snowflake_block: str | None = None,
) -> dict[str, object]:
    """The fields of ``dicom-settings-<env>`` (all but the secret) from the collected values.

    The target is Snowflake when a Snowflake account was given, unless ``dbt_target``
    says otherwise; the batch size defaults to the documented 1,000 files.

    Raises
    ------
    RegistrationError
        A number (``batch_size``, ``snowflake_port``) that is not a positive whole number,
        or an unknown ``dbt_target`` or ``snowflake_protocol``.
    """
    from blocks.settings import DEFAULT_BATCH_SIZE
    from tasks.lake.s3 import DEFAULT_MAX_CONCURRENCY

    target = values.get("dbt_target") or ("snowflake" if snowflake_block else "duckdb")
    if target not in ("duckdb", "snowflake"):
        msg = f"unknown dbt_target {target!r} ({ENV_VARS['dbt_target']}); use duckdb or snowflake"
        raise RegistrationError(msg)
    protocol = values.get("snowflake_protocol")
    if protocol not in (None, "http", "https"):
        msg = f"unknown snowflake_protocol {protocol!r} ({ENV_VARS['snowflake_protocol']}); use https or http"
        raise RegistrationError(msg)
    fields: dict[str, object] = {
        "environment": env,
        "source": values.get("source", "data/incoming"),
        "lake": values.get("lake", "data/lake"),
        "warehouse": values.get("warehouse", "data/warehouse.duckdb"),
        "dbt_target": target,
        "batch_size": _positive(values, "batch_size", DEFAULT_BATCH_SIZE),
        "s3_max_concurrency": _positive(values, "s3_max_concurrency", DEFAULT_MAX_CONCURRENCY),
        "aws_credentials_block": aws_block,
        "snowflake_host": values.get("snowflake_host"),
        "snowflake_port": _positive(values, "snowflake_port", None),
        "snowflake_protocol": protocol,
    }
    if snowflake_block:  # else the block's default name stands (no Snowflake in this environment)
        fields["snowflake_connector_block"] = snowflake_block
    return fields


def _positive(values: Mapping[str, str], key: str, default: int | None) -> int | None:
    text = values.get(key)
    if text is None:
        return default
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"{key} ({ENV_VARS[key]}) must be a whole number of 1 or more, got {text!r}"
        raise RegistrationError(msg)
    return number
