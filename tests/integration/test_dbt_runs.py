"""How a dbt build shows in Prefect: one ``dbt`` task with a table of its models and tests (the
default), or prefect-dbt's task run per node (``dbt_node_tasks``); a failing model named in the
flow's error either way. The failure is real: a lake file damaged after it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import WarehouseError
from tests.integration.lakes import build_lake
from tests.runs import task_runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
SECRET = "dbt-runs-secret"


def _artifacts(flow_run_id) -> dict[str, list[dict]]:  # noqa: ANN001 - a UUID
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: json.loads(a.data) if isinstance(a.data, str) else a.data for a in found if a.key}


@pytest.mark.parametrize("node_tasks", [False, True], ids=["one-dbt-task", "task-per-node"])
def test_a_failing_model_is_named_and_the_nodes_are_reported(node_tasks, prefect_server, synthetic_dir, tmp_path, monkeypatch):
    from flows.warehouse import build_warehouse

    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", SECRET)
    monkeypatch.setenv("DICOM_ETL_DBT_NODE_TASKS", str(node_tasks).lower())
    lake, warehouse = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    build_lake(synthetic_dir, lake, secret=SECRET)
    # a previews file cut short (a copy by another tool, a full disk): the stg_previews model cannot read it
    damaged = min((lake / "tables" / "previews").glob("ingest_date=*/*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:64])

    state = build_warehouse(lake=str(lake), warehouse=str(warehouse), return_state=True)

    assert state.is_failed()
    with pytest.raises(WarehouseError, match=r"dbt build failed on the warehouse .*: model stg_previews \(error\)"):
        state.result()
    names = {t.name: t.state_name for t in task_runs(state.state_details.flow_run_id)}
    if node_tasks:
        assert names.get("model stg_previews") == "Failed", names
        assert names.get("model stg_images") == "Completed", names
    else:
        assert not any(n.startswith(("model ", "test ", "seed ")) for n in names), names
        [dbt_task] = [n for n in names if n.startswith("dbt-")]
        assert names[dbt_task] == "Completed"  # dbt ran; the flow judges its result
        nodes = {row["node"]: row for row in _artifacts(state.state_details.flow_run_id)["dbt-nodes"]}
        assert nodes["stg_previews"]["status"] == "error" and nodes["stg_previews"]["type"] == "model"
        assert nodes["stg_images"]["status"] == "success"
        assert nodes["unique_stg_images_sop_instance_uid"]["status"] == "pass"
        assert all(row["seconds"] >= 0 for row in nodes.values())
        assert nodes["stg_previews"]["message"] == "", "a database error may quote a value: kept out of the artifact"
