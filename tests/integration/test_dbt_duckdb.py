"""The dbt project on DuckDB through the build-warehouse flow: typed stage, de-identified
processed layer, incremental loads, stable pseudonyms. A real Prefect server runs the flow."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tasks.deid import pseudo_uid, pseudonym
from tasks.warehouse.dbt import PROCESSED_TABLES, count_rows

# one session fixture runs dbt seven times (seconds each on an idle machine)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]
from tests.integration.conftest import SECRET
KEYS = {
    "patients": "patient_pseudo_id",
    "studies": "study_pseudo_uid",
    "series": "series_pseudo_uid",
    "devices": "device_pseudo_id",
    "images": "sop_instance_pseudo_uid",
    "processed_images": "sop_instance_pseudo_uid",
}


def _sql(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_processed_tables_have_rows(duckdb_built):
    for table in PROCESSED_TABLES:
        assert duckdb_built["first"][table] > 0, table


def test_rebuild_and_reingest_duplicate_nothing(duckdb_built):
    assert duckdb_built["rerun"] == duckdb_built["first"]
    # the build that took the re-ingested batches (and a new one) holds what a warehouse built
    # once from the same lake holds, table by table; the new batch's own rows are counted below
    assert duckdb_built["extended"] == duckdb_built["other_counts"]


def test_a_build_with_nothing_new_runs_no_dbt_and_no_pseudonym_map(duckdb_built):
    from tests.runs import task_runs

    names = {run.name for run in task_runs(duckdb_built["rerun_run_id"])}
    assert any(n.startswith("plan-warehouse-build") for n in names)
    assert not any(n.startswith(("write-pseudonym-map", "model ", "test ", "seed ")) for n in names), names


def test_increments_give_the_tables_of_a_full_refresh(duckdb_built):
    """Random increments (a changed object, a duplicate conflict, a late batch), built one by one,
    hold the same rows as a full refresh of the same lake: every stage and processed table."""
    with duckdb.connect() as con:
        con.execute(f"attach '{duckdb_built['warehouse']}' as incremental (read_only)")
        con.execute(f"attach '{duckdb_built['other']}' as refreshed (read_only)")
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'incremental' "
            "and schema_name in ('stage', 'processed') order by 1, 2"
        ).fetchall()
        assert len(tables) >= 12, tables
        for schema, table in tables:
            described = con.execute(f"select * from incremental.{schema}.{table} limit 0").description
            # stg_phi_terms.batch_id: which batch brought a term first
            columns = [d[0] for d in described if not (table == "stg_phi_terms" and d[0] == "batch_id")]
            cols = ", ".join(f'"{c}"' for c in columns)
            a = f"select {cols} from incremental.{schema}.{table}"
            b = f"select {cols} from refreshed.{schema}.{table}"
            n = con.execute(f"select count(*) from ({a})").fetchone()[0]
            extra = con.execute(f"select count(*) from ({a} except all {b})").fetchone()[0]
            missing = con.execute(f"select count(*) from ({b} except all {a})").fetchone()[0]
            assert (extra, missing) == (0, 0), f"{schema}.{table}: {extra} rows only incremental, {missing} only refreshed, of {n}"
    # views name the warehouse's own catalog: query them on a connection of their own
    wh = duckdb_built["warehouse"]
    assert _sql(wh, "select count(distinct sop_instance_uid) from stage.stg_image_conflicts")[0][0] >= 1
    changed = _sql(
        wh,
        "select count(distinct content_hash) from stage.stg_image_versions "
        "where sop_instance_uid in (select sop_instance_uid from stage.stg_image_versions "
        "group by 1 having count(distinct source_key) = 1)",
    )[0][0]
    assert changed >= 1
    # the late batch's patient is in
    assert duckdb_built["refreshed"]["patients"] == duckdb_built["extended"]["patients"] + 1
    assert count_rows(duckdb_built["warehouse"]) == duckdb_built["refreshed"]


def test_new_batch_adds_rows_and_keys_stay_unique(duckdb_built):
    first, extended = duckdb_built["first"], duckdb_built["extended"]
    assert extended["patients"] == first["patients"] + 2
    assert extended["images"] == first["images"] + 4
    for table, key in KEYS.items():
        n, distinct = _sql(duckdb_built["warehouse"], f"select count(*), count(distinct {key}) from processed.{table}")[0]
        assert n == distinct, table


def test_pseudonyms_stable_across_separate_warehouses(duckdb_built):
    assert duckdb_built["other_counts"] == duckdb_built["extended"]
    for table, key in KEYS.items():
        a = set(_sql(duckdb_built["warehouse"], f"select {key} from processed.{table}"))
        b = set(_sql(duckdb_built["other"], f"select {key} from processed.{table}"))
        assert a == b, table
    dates_a = set(_sql(duckdb_built["warehouse"], "select study_pseudo_uid, study_date_shifted from processed.studies"))
    dates_b = set(_sql(duckdb_built["other"], "select study_pseudo_uid, study_date_shifted from processed.studies"))
    assert dates_a == dates_b


def test_pseudonyms_are_the_python_hmac(duckdb_built):
    """SQL joins the map Python computed: the same values tasks/deid.py gives the previews."""
    lake = duckdb_built["lake"]
    raw = duckdb.sql(f"select distinct SOPInstanceUID from read_parquet('{lake}/tables/images/**/*.parquet')").fetchall()
    got = {r[0] for r in _sql(duckdb_built["warehouse"], "select sop_instance_pseudo_uid from processed.images")}
    assert got == {pseudo_uid(u, SECRET) for (u,) in raw}
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in got)
    joined = _sql(
        duckdb_built["warehouse"],
        "select preview_key, sop_instance_pseudo_uid from processed.processed_images where preview_key is not null",
    )
    assert joined
    previews = duckdb.sql(f"select distinct SOPInstanceUID from read_parquet('{lake}/tables/previews/**/*.parquet')").fetchall()
    assert {Path(k).stem for k, _ in joined} == {pseudonym(u, SECRET) for (u,) in previews}
    for key, _ in joined:
        assert (lake / key).is_file()


def test_dates_shifted_per_patient_and_intervals_kept(duckdb_built):
    rows = _sql(
        duckdb_built["warehouse"],
        """
        select s.patient_key, s.study_instance_uid, s.study_date
        from stage.stg_studies s where s.study_date is not null
        """,
    )
    shifted = dict(_sql(duckdb_built["warehouse"], "select study_pseudo_uid, study_date_shifted from processed.studies"))
    by_patient: dict[str, list[int]] = {}
    for patient_key, uid, original in rows:
        new = shifted[pseudo_uid(uid, SECRET)]
        offset = (original - new).days
        assert 1 <= offset <= 365
        by_patient.setdefault(patient_key, []).append(offset)
    # every study of a patient moves by the same offset: intervals survive
    assert all(len(set(offsets)) == 1 for offsets in by_patient.values())
    assert any(len(offsets) > 1 for offsets in by_patient.values())


def test_stage_is_typed(duckdb_built):
    columns = dict(
        _sql(
            duckdb_built["warehouse"],
            "select column_name, data_type from information_schema.columns where table_schema = 'stage' and table_name = 'stg_images'",
        )
    )
    assert columns["content_date"] == "DATE"
    assert columns["content_time"] == "TIME"
    assert columns["acquisition_date_time"] == "TIMESTAMP"
    assert columns["slice_thickness"] == "DOUBLE"
    assert columns["instance_number"] == "BIGINT"
    assert columns["image_position_patient"] == "DOUBLE[]"
    assert columns["image_type"] == "VARCHAR[]"


def test_applied_profile_recorded_on_every_row(duckdb_built):
    for table in PROCESSED_TABLES:
        values = set(
            _sql(
                duckdb_built["warehouse"],
                f"select patient_identity_removed, deidentification_method_codes from processed.{table}",
            )
        )
        base = ("YES", "113100\\113107\\113108\\113105")
        # images whose burned-in text was removed and verified also carry 113101 (Clean Pixel Data)
        allowed = {base, (base[0], base[1] + "\\113101")} if table == "processed_images" else {base}
        assert base in values and values <= allowed, table


def test_no_secret_or_key_material_left_in_the_project(duckdb_built):
    from tests.key_material import hmac_pads
    from tasks.warehouse.dbt import DBT_PROJECT_DIR, dbt_target_dir

    needles = [SECRET, *hmac_pads(SECRET)]
    state = dbt_target_dir(str(duckdb_built["warehouse"]), target="duckdb")
    assert (state / "partial_parse.msgpack").is_file()  # kept for the next build
    assert not (state / "compiled").exists()
    for path in [*(DBT_PROJECT_DIR / "target").rglob("*"), *state.rglob("*")]:
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert not any(n in text for n in needles), path


def test_warehouse_file_holds_no_identifier_map(duckdb_built):
    """The map linking pseudonyms to identifiers lives in its own file, not in the warehouse."""
    from tasks.warehouse.dbt import deid_database

    tables = _sql(duckdb_built["warehouse"], "select table_schema, table_name from information_schema.tables")
    assert ("internal", "deid_pseudonyms") not in tables
    assert _sql(deid_database(duckdb_built["warehouse"]), "select count(*) from internal.deid_pseudonyms")[0][0] > 0
