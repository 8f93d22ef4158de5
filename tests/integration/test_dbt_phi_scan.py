"""The PHI scan: every PHI value of the input, read with pydicom, is absent from every
processed table (DuckDB), while the stage layer, which keeps PHI, is full of them."""

from __future__ import annotations

import duckdb
import pytest

from tasks.warehouse import PROCESSED_TABLES
from tests.integration.phi import Phi, collect_phi, find_phi

pytestmark = pytest.mark.integration


def _scan(phi: Phi, warehouse, schema: str, tables) -> list[str]:
    hits: list[str] = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in tables:
            rel = con.sql(f"select * from {schema}.{table}")
            hits += find_phi(phi, table, rel.columns, rel.fetchall())
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
    assert _scan(phi, duckdb_built["warehouse"], "processed", PROCESSED_TABLES) == []
