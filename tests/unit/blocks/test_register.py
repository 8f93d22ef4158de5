"""`blocks register`: every variable it reads is in --help; Snowflake values make a Snowflake target."""

from __future__ import annotations

import pytest

from blocks.register import ENV_VARS, RegistrationError, collect_values, settings_fields


def test_help_lists_every_variable_read(capsys):
    from tests.cli import run_main

    code, out, err = run_main(["blocks", "register", "--help"], capsys)
    assert code == 0, err
    missing = [var for var in ENV_VARS.values() if var not in out]
    assert not missing and "DICOM_ETL_DBT_TARGET" in out and "DICOM_ETL_BATCH_SIZE" in out


def test_a_snowflake_account_makes_the_target_snowflake_unless_said_otherwise():
    values = collect_values("dev", environ={"SNOWFLAKE_ACCOUNT": "acme", "SNOWFLAKE_HOST": "127.0.0.1",
                                            "SNOWFLAKE_PORT": "8123", "SNOWFLAKE_PROTOCOL": "http"})
    fields = settings_fields("dev", values, snowflake_block="dicom-snowflake-dev")
    assert fields["dbt_target"] == "snowflake"
    assert (fields["snowflake_host"], fields["snowflake_port"], fields["snowflake_protocol"]) == ("127.0.0.1", 8123, "http")
    said = settings_fields("dev", values | {"dbt_target": "duckdb"}, snowflake_block="dicom-snowflake-dev")
    assert said["dbt_target"] == "duckdb"
    assert settings_fields("dev", {})["dbt_target"] == "duckdb"


def test_snowflake_endpoint_from_a_toml_file_and_the_documented_batch_size(tmp_path):
    config = tmp_path / "envs.toml"
    config.write_text('[dev]\nsnowflake_account = "acme"\nsnowflake_host = "sf.local"\nsnowflake_port = 9000\n')
    values = collect_values("dev", environ={}, config_file=config)
    fields = settings_fields("dev", values, snowflake_block="dicom-snowflake-dev")
    assert (fields["snowflake_host"], fields["snowflake_port"]) == ("sf.local", 9000)
    assert fields["batch_size"] == 1000


@pytest.mark.parametrize("values", [{"batch_size": "0"}, {"snowflake_port": "http"}, {"dbt_target": "postgres"},
                                    {"snowflake_protocol": "ftp"}])
def test_bad_values_are_named(values):
    with pytest.raises(RegistrationError, match=next(iter(values))):
        settings_fields("dev", values)
