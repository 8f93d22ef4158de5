"""The de-identification rules and column types (dbt seeds) against the raw tables, and
the pure warehouse helpers: pseudonym map, profile target selection."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from tasks.deid import pseudo_uid, pseudonym
from tasks.dicom.entities import DEVICES, IMAGES, PATIENTS, SERIES, STUDIES
from tasks.errors import WarehouseError
from tasks.warehouse.pseudonyms import ANNEX_E_ACTIONS, date_offset_days, identifier_columns, pseudonym_table, read_rules
from tasks.warehouse.dbt import DBT_PROJECT_DIR, dbt_environment, select_profile_target

SEEDS = DBT_PROJECT_DIR / "seeds"
ENTITIES = (PATIENTS, STUDIES, SERIES, DEVICES, IMAGES)


def _rows(name: str) -> list[dict]:
    with (SEEDS / f"{name}.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_every_raw_column_has_a_type_and_a_rule(entity):
    raw = {c for c in entity.schema if c not in ("source_key", "source_etag", "batch_id", "ingested_at", "ingest_date")}
    typed = {r["column"] for r in _rows("internal_column_types") if r["entity"] == entity.name}
    ruled = {r["column"] for r in _rows("internal_anonymization_rules") if r["entity"] == entity.name}
    assert raw == typed
    assert raw <= ruled


def test_rules_use_annex_e_actions_and_name_their_outputs():
    rules = _rows("internal_anonymization_rules")
    for r in rules:
        assert r["action"] in ANNEX_E_ACTIONS, r
        assert r["basic_profile_action"] in ANNEX_E_ACTIONS, r
        if r["action"] in ("K", "C", "U", "D"):
            assert r["processed_name"], r
        if r["action"] == "X":
            assert not r["processed_name"], r
    names = [(r["entity"], r["processed_name"]) for r in rules if r["processed_name"]]
    assert len(names) == len(set(names))


def test_identifying_columns_are_never_kept():
    kept = {(r["entity"], r["column"]) for r in _rows("internal_anonymization_rules") if r["action"] == "K"}
    for name in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                 "ReferringPhysicianName", "OperatorsName", "StudyInstanceUID", "SOPInstanceUID",
                 "DeviceSerialNumber", "StationName", "StudyDate", "OtherPatientIDs"):
        assert not any(column == name for _, column in kept), name


def test_read_rules_refuses_a_non_annex_e_action(tmp_path):
    bad = tmp_path / "rules.csv"
    bad.write_text("entity,column,action,processed_name\npatients,PatientName,keep,\n")
    with pytest.raises(WarehouseError, match="PatientName"):
        read_rules(bad)


def test_identifier_columns_cover_uids_and_keys():
    ids = identifier_columns(read_rules())
    assert "patient_key" in ids["patients"] and "SOPInstanceUID" in ids["images"]
    assert "AccessionNumber" in ids["studies"] and "device_key" in ids["devices"]


def test_pseudonym_map_is_deterministic_and_matches_python():
    values = ["1.2.3.4", "PAT-1^HOSP", "ACC9"]
    a, b = pseudonym_table(values, "k1"), pseudonym_table(values, "k1")
    assert a.equals(b)
    rows = a.to_pylist()
    for v, row in zip(values, rows, strict=True):
        assert row["pseudonym"] == pseudonym(v, "k1")
        assert row["pseudo_uid"] == pseudo_uid(v, "k1")
        assert 1 <= row["date_offset_days"] <= 365
        assert row["date_offset_days"] == date_offset_days(row["pseudonym"])
    assert pseudonym_table(values, "k2").column("pseudonym").to_pylist() != a.column("pseudonym").to_pylist()


def test_profile_keeps_only_the_target_and_renames_the_block():
    profiles = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    duck = select_profile_target(profiles, target="duckdb", snowflake_block="prod-sf")
    assert set(duck["dicom_etl"]["outputs"]) == {"duckdb"}
    assert "prefect.blocks" not in yaml.safe_dump(duck)
    snow = select_profile_target(profiles, target="snowflake", snowflake_block="prod-sf")
    text = yaml.safe_dump(snow)
    assert snow["dicom_etl"]["target"] == "snowflake"
    assert "prefect.blocks.snowflake-connector.prod-sf.credentials.password" in text
    assert "dicom-etl-snowflake" not in text
    with pytest.raises(WarehouseError, match="bigquery"):
        select_profile_target(profiles, target="bigquery", snowflake_block="x")


def test_dbt_environment_carries_no_key_material(tmp_path: Path):
    env = dbt_environment(lake=str(tmp_path), warehouse=str(tmp_path / "w.duckdb"), target="duckdb")
    assert not any(word in k for k in env for word in ("SECRET", "IPAD", "OPAD"))
    assert env["DICOM_ETL_DEID_DB"].endswith("w.deid.duckdb")
    with pytest.raises(WarehouseError, match="dbt_target"):
        dbt_environment(lake=str(tmp_path), warehouse="w", target="postgres")
