"""What `python -m flows ingest` prints at the end: counts in words, and where the tables are."""

from __future__ import annotations

from flows.cli import print_summary

SUMMARY = {
    "listed": 40, "files": 1, "batches": 1, "raw_rows": {"images": 1}, "rejected": {"duplicate_conflict": 1},
    "quarantined": [{"reason": "duplicate_conflict", "source_key": "b.dcm",
                     "detail": "another file of the batch has the same SOPInstanceUID with different content "
                               "(content_hash 0123456789abcdef...); both are kept in images"}],
    "lake": "s3://lake/dev", "warehouse": "data/warehouse.duckdb",
}


def test_counts_read_as_words(capsys):
    print_summary(SUMMARY | {"listed": 1}, "http://127.0.0.1:4200/api")
    out = capsys.readouterr().out
    assert "listed at the source: 1 object; new: 1 in 1 batch" in out
    assert "1 files" not in out and "1 batches" not in out
    print_summary(SUMMARY | {"files": 0, "batches": 0}, "http://127.0.0.1:4200/api")
    out = capsys.readouterr().out
    assert "listed at the source: 40 objects; new: 0 in 0 batches; already in the manifest (skipped): 40" in out
    assert "files listed: 0" not in out


def test_details_are_not_cut_mid_word(capsys):
    print_summary(SUMMARY, "http://127.0.0.1:4200/api")
    assert "both are kept in images" in capsys.readouterr().out


def test_a_snowflake_run_says_where_its_tables_are_on_snowflake(capsys):
    print_summary(SUMMARY | {"warehouse_target": "snowflake", "snowflake_block": "dicom-snowflake-nowhere"},
                  "http://127.0.0.1:9/api")
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warehouse:")]
    assert "Snowflake" in line and "dicom-snowflake-nowhere" in line and ".duckdb" not in line
