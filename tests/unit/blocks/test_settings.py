"""One configuration per run: parameters > settings block > environment > defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.settings import DicomPipelineSettings, PipelineConfig, merge_config, resolve_config
from tasks.errors import ConfigError

ENVIRON = {
    "DICOM_ETL_SOURCE": "/env/in",
    "DICOM_ETL_LAKE": "/env/lake",
    "DICOM_ETL_BATCH_SIZE": "7",
    "DICOM_ETL_COMPRESSION": "deployment",
    "DICOM_ETL_DEID_SECRET": "env-secret",
}


def _block(**fields) -> DicomPipelineSettings:
    return DicomPipelineSettings(deid_secret=SecretStr("block-secret"), **fields)


def test_defaults_are_local_folders_and_a_secret_file_made_once(tmp_path):
    config = merge_config({}, environ={}, data_dir=tmp_path)
    assert (config.source, config.lake, config.warehouse) == (
        str(tmp_path / "incoming"), str(tmp_path / "lake"), str(tmp_path / "warehouse.duckdb"))
    assert (config.environment, config.dbt_target, config.batch_size, config.compression) == ("local", "duckdb", 1000, "local")
    assert config.settings_block is None
    assert config.secret == (tmp_path / ".deid_secret").read_text().strip()
    assert merge_config({}, environ={}, data_dir=tmp_path).secret == config.secret
    assert (tmp_path / ".deid_secret").stat().st_mode & 0o777 == 0o600


def test_environment_beats_defaults(tmp_path):
    config = merge_config({}, environ=ENVIRON, data_dir=tmp_path)
    assert (config.source, config.lake, config.batch_size, config.compression) == ("/env/in", "/env/lake", 7, "deployment")
    assert config.warehouse == str(tmp_path / "warehouse.duckdb")  # not in the environment: the default
    assert config.secret == "env-secret"
    assert not (tmp_path / ".deid_secret").exists()


def test_block_beats_environment_even_where_it_keeps_its_own_default(tmp_path):
    config = merge_config({}, block=_block(lake="/block/lake", environment="dev"), block_name="dev-settings",
                          environ=ENVIRON, data_dir=tmp_path)
    assert (config.lake, config.environment, config.settings_block) == ("/block/lake", "dev", "dev-settings")
    assert (config.source, config.batch_size, config.compression) == ("data/incoming", 1000, "local")
    assert config.secret == "block-secret"


def test_parameters_beat_the_block(tmp_path):
    config = merge_config({"lake": "/param/lake", "batch_size": 3, "source": None},
                          block=_block(lake="/block/lake", source="s3://b/in"), environ=ENVIRON, data_dir=tmp_path)
    assert (config.lake, config.batch_size, config.source) == ("/param/lake", 3, "s3://b/in")


def test_block_snowflake_endpoint_reaches_the_config(tmp_path):
    block = _block(dbt_target="snowflake", snowflake_connector_block="sf", snowflake_host="127.0.0.1",
                   snowflake_port=8123, snowflake_protocol="http")
    config = merge_config({}, block=block, environ={}, data_dir=tmp_path)
    assert config.snowflake_connector_block == "sf"
    assert config.snowflake_connect == {"host": "127.0.0.1", "port": 8123, "protocol": "http", "network_timeout": 900}


def test_a_subflow_applies_its_parameters_on_the_resolved_config_without_loading_again(tmp_path):
    parent = merge_config({}, block=_block(lake="/block/lake"), block_name="never-loaded", environ={}, data_dir=tmp_path)
    # the name is not a saved block: resolving from it again would fail
    child = resolve_config("never-loaded", base=parent, source="/day/2024-01-01", lake=None)
    assert (child.source, child.lake, child.secret) == ("/day/2024-01-01", "/block/lake", "block-secret")
    assert resolve_config(base=parent) is parent


def test_config_is_frozen_and_hides_its_secret(tmp_path):
    config = merge_config({}, environ=ENVIRON, data_dir=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lake = "/elsewhere"  # type: ignore[misc]
    assert "env-secret" not in repr(config)


def test_the_secret_is_masked_where_prefect_records_a_subflow_parameter(tmp_path):
    from flows.ingest import ingest_dicom  # (flows.warehouse imports dbt: seconds)

    config = merge_config({}, environ=ENVIRON, data_dir=tmp_path)
    recorded = ingest_dicom.serialize_parameters({"config": config})
    assert recorded["config"]["lake"] == "/env/lake"
    assert "env-secret" not in str(recorded)
    validated = ingest_dicom.validate_parameters({"config": config})["config"]
    assert isinstance(validated, PipelineConfig) and validated.secret == "env-secret"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"DICOM_ETL_BATCH_SIZE": "many"}, "$DICOM_ETL_BATCH_SIZE='many' is not a whole number"),
        ({"DICOM_ETL_BATCH_BYTES": "0"}, "batch_bytes must be 1 or more, got 0"),
    ],
)
def test_an_unusable_environment_value_is_named(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        merge_config({}, environ={**values, "DICOM_ETL_DEID_SECRET": "x"}, data_dir=tmp_path)


def test_a_zero_batch_size_is_refused_not_replaced(tmp_path):
    with pytest.raises(ConfigError, match="batch_size must be 1 or more, got 0"):
        merge_config({"batch_size": 0}, environ={"DICOM_ETL_DEID_SECRET": "x"}, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("compression", "lake", "target"),
    [("local", "/l", "local"), ("deployment", "/l", "compress-dicom/remote"), ("compress-dicom/gpu", "/l", "compress-dicom/gpu")],
)
def test_compression_target_comes_from_the_config(tmp_path, compression, lake, target):
    from flows.compress import compression_target

    config = merge_config({"compression": compression, "lake": lake}, environ={"DICOM_ETL_DEID_SECRET": "x"}, data_dir=tmp_path)
    assert compression_target(config) == target


def test_resolve_reads_the_environment_when_no_block_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DICOM_ETL_SETTINGS_BLOCK", raising=False)
    config = resolve_config(environ=ENVIRON, data_dir=Path(tmp_path), warehouse="/param/wh.duckdb")
    assert (config.lake, config.warehouse) == ("/env/lake", "/param/wh.duckdb")


def test_s3_max_concurrency_reaches_the_s3_access_of_a_run(tmp_path):
    from blocks.settings import resolve_s3_access
    from tasks.lake.s3 import DEFAULT_MAX_CONCURRENCY

    assert resolve_s3_access(merge_config({}, environ={}, data_dir=tmp_path)).max_concurrency == DEFAULT_MAX_CONCURRENCY
    from_env = merge_config({}, environ={"DICOM_ETL_S3_MAX_CONCURRENCY": "64"}, data_dir=tmp_path)
    assert resolve_s3_access(from_env).max_concurrency == 64
    block = merge_config({}, block=_block(s3_max_concurrency=96), environ={"DICOM_ETL_S3_MAX_CONCURRENCY": "64"}, data_dir=tmp_path)
    assert block.s3_max_concurrency == 96
    with pytest.raises(ConfigError, match="s3_max_concurrency must be 1 or more"):
        merge_config({}, environ={"DICOM_ETL_S3_MAX_CONCURRENCY": "0"}, data_dir=tmp_path)


def test_export_deid_from_each_layer(tmp_path):
    assert merge_config({}, environ={}, data_dir=tmp_path).export_deid is False
    assert merge_config({}, environ={"DICOM_ETL_EXPORT_DEID": "true"}, data_dir=tmp_path).export_deid is True
    assert merge_config({}, block=_block(export_deid=True), environ={}, data_dir=tmp_path).export_deid is True
    assert merge_config({"export_deid": True}, environ={"DICOM_ETL_EXPORT_DEID": "0"}, data_dir=tmp_path).export_deid is True
    with pytest.raises(ConfigError, match="DICOM_ETL_EXPORT_DEID"):
        merge_config({}, environ={"DICOM_ETL_EXPORT_DEID": "maybe"}, data_dir=tmp_path)


def test_a_block_saved_with_the_removed_bucket_block_fields_still_loads(tmp_path):
    """Documents saved before provider_bucket_block/lake_bucket_block went away: Block allows extra fields."""
    assert not {"provider_bucket_block", "lake_bucket_block"} & set(DicomPipelineSettings.model_fields)
    saved = {"deid_secret": "block-secret", "lake": "/block/lake",
             "provider_bucket_block": "dicom-provider-dev", "lake_bucket_block": "dicom-lake-dev"}
    block = DicomPipelineSettings.model_validate(saved)  # what Block.load does with a document's data
    config = merge_config({}, block=block, block_name="dev", environ={}, data_dir=tmp_path)
    assert (config.lake, config.secret, config.settings_block) == ("/block/lake", "block-secret", "dev")
