"""The PHI scan: every PHI value of the input, read with pydicom, is absent from every
processed table (DuckDB), while the stage layer, which keeps PHI, is full of them."""

from __future__ import annotations

import duckdb
import pytest

from tasks.deid import pseudo_uid
from tasks.warehouse.dbt import OPTIONAL_TABLES, PROCESSED_TABLES
from tests.integration.conftest import SECRET
from tests.integration.phi import Phi, collect_phi, find_phi

pytestmark = pytest.mark.integration


def _scan(phi: Phi, warehouse, schema: str, tables) -> list[str]:
    hits: list[str] = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in tables:
            rel = con.sql(f"select * from {schema}.{table}")
            hits += find_phi(phi, table, rel.columns, rel.fetchall(), typed_dates=schema == "stage")
    return hits


@pytest.fixture(scope="module")
def phi(duckdb_built):
    value = collect_phi(duckdb_built["source"])
    more = collect_phi(duckdb_built["more"])
    value.strings |= more.strings
    value.terms |= more.terms
    value.dates |= more.dates
    return value


def test_the_input_has_phi_to_look_for(phi):
    assert len(phi.strings) > 100 and len(phi.dates) > 10 and phi.terms


def test_stage_holds_phi_so_the_scan_can_see_it(duckdb_built, phi):
    assert _scan(phi, duckdb_built["warehouse"], "stage", ["stg_patients", "stg_studies", "stg_devices"])


def test_no_phi_in_any_processed_table(duckdb_built, phi):
    assert _scan(phi, duckdb_built["warehouse"], "processed", PROCESSED_TABLES + OPTIONAL_TABLES) == []


DATES = {
    "studies": ("study_instance_uid", "study_pseudo_uid", ["study_date"]),
    "series": ("series_instance_uid", "series_pseudo_uid", ["series_date", "performed_procedure_step_start_date"]),
    "images": ("sop_instance_uid", "sop_instance_pseudo_uid", ["content_date", "acquisition_date", "instance_creation_date", "acquisition_date_time"]),
}


@pytest.mark.parametrize("table", sorted(DATES))
def test_no_original_date_in_its_processed_row(duckdb_built, table):
    """Record by record: every date of a processed row differs from the original date of that row."""
    uid, pseudo, columns = DATES[table]
    with duckdb.connect(str(duckdb_built["warehouse"]), read_only=True) as con:
        originals = {r[0]: r[1:] for r in con.execute(f"select {uid}, {', '.join(columns)} from stage.stg_{table}").fetchall()}
        shifted = {
            r[0]: r[1:]
            for r in con.execute(f"select {pseudo}, {', '.join(c + '_shifted' for c in columns)} from processed.{table}").fetchall()
        }
    compared = 0
    for original_uid, dates in originals.items():
        new = shifted[pseudo_uid(original_uid, SECRET)]
        for before, after in zip(dates, new, strict=True):
            assert (before is None) == (after is None)
            if before is not None:
                assert before != after
                assert 1 <= (before - after).days <= 365
                compared += 1
    assert compared
