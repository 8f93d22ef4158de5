from __future__ import annotations

from datetime import UTC, datetime

from tasks.lake.manifest import manifest_frame, pending_objects, processed_versions, read_local_manifest, manifest_key
from tasks.lake.tables import write_parquet_atomic
from tasks.lake.storage import ObjectInfo

NOW = datetime(2024, 1, 2, tzinfo=UTC)


def test_second_run_new_arrivals_and_changed_objects(tmp_path):
    first = [ObjectInfo("a", 1, "e1"), ObjectInfo("b.zip", 2, "e2"), ObjectInfo("gone", 3, "e3")]
    frame = manifest_frame(first, batch_id="b1", hashes={"a": "h"}, quarantined=["b.zip!/m"], skipped=["gone"], processed_at=NOW)
    assert dict(frame.select("key", "status").iter_rows()) == {"a": "done", "b.zip": "quarantined"}
    write_parquet_atomic(frame, tmp_path / manifest_key("b1"))
    done = processed_versions(read_local_manifest(tmp_path))
    assert pending_objects(first, done) == [ObjectInfo("gone", 3, "e3")]
    later = [ObjectInfo("a", 1, "e1-changed"), ObjectInfo("b.zip", 2, "e2"), ObjectInfo("new", 1, "e4")]
    assert [o.key for o in pending_objects(later, done)] == ["a", "new"]
