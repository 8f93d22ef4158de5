"""Deployments end to end: files arrive -> events -> triggers -> ingest and dbt runs -> rows.

The session's Prefect server (other modules' runs and events are on it too: everything read
here is what arrived after this module deployed), the work pools of
``deployments/create-pools.sh``, ``prefect --no-prompt deploy --all`` of the project's
``prefect.yaml``, a process worker, and the event sources: the folder watcher and the
S3 -> SQS bridge on the session's moto server. Nothing starts a flow run by hand. The
deployments and automations are deleted when the module ends, so no later event starts a run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.cli import stop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
#: What `prefect deploy --all` creates from prefect.yaml (and the module deletes at its end).
DEPLOYMENTS = {"provider", "local", "rebuild", "date-range", "remote"}
AUTOMATIONS = {"ingest-on-arrival", "dbt-after-ingest"}


class Stack:
    """Processes of one test stack: server, worker, event sources; stopped in reverse order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[subprocess.Popen, object]] = []
        self.api = ""
        self.env: dict[str, str] = {}
        self.earlier_runs: set[str] = set()  # runs other modules left on the session server
        self.started = datetime.now(UTC)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(args, cwd=cwd, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc

    def run(self, args: list[str], timeout: int = 600) -> str:
        out = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    def stop(self) -> None:
        for proc, log in reversed(self.procs):
            stop(proc, log)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text()[-4000:]}" for p in sorted(self.root.glob("*.log"))
        )

    def all_flow_run_ids(self) -> set[str]:
        return {r["id"] for r in self._read_all("flow_runs")}

    def _read_all(self, what: str, **body) -> list[dict]:  # noqa: ANN003 - the filter of Prefect's API
        out: list[dict] = []
        while True:
            page_of = {**body, "limit": 200, "offset": len(out)}
            response = httpx.post(f"{self.api}/{what}/filter", json=page_of, timeout=30)
            response.raise_for_status()
            page = response.json()
            out += page
            if len(page) < 200:
                return out

    def flow_runs(self) -> list[dict]:
        """This module's flow runs: its deployments' runs, their subflows, and any run whose
        parameters name its folders or bucket (what an event source that started a run by hand
        would have started). Other modules' runs are on the server too, some at the same time
        (pytest-xdist's other worker)."""
        runs = [r for r in self._read_all("flow_runs") if r["id"] not in self.earlier_runs]
        deployments = {d["id"]: d for d in self._read_all("deployments")}
        flows = {f["id"]: f["name"] for f in httpx.post(f"{self.api}/flows/filter", json={}, timeout=30).json()}
        ours = set()
        for run in runs:
            dep = deployments.get(run.get("deployment_id"))
            run["deployment_name"] = f"{flows.get(run['flow_id'])}/{dep['name']}" if dep else None
            params = json.dumps(run["parameters"])
            if (dep and dep["name"] in DEPLOYMENTS) or str(self.root) in params or "s3://deploy-provider" in params:
                ours.add(run["id"])
        while True:  # subflows (and theirs): the parent task run belongs to one of this module's runs
            children = {r["parent_task_run_id"]: r["id"] for r in runs
                        if r["parent_task_run_id"] and r["id"] not in ours}
            parents = self._read_all("task_runs", task_runs={"id": {"any_": list(children)}}) if children else []
            adopted = {children[t["id"]] for t in parents if t["flow_run_id"] in ours}
            if not adopted:
                return [r for r in runs if r["id"] in ours]
            ours |= adopted


@pytest.fixture(scope="module")
def moto_endpoint(moto_s3) -> str:
    """The session's moto server (S3 + SQS); the worker's flow runs reach it through AWS_ENDPOINT_URL."""
    return moto_s3["url"]


@pytest.fixture(scope="module")
def stack(prefect_server, tmp_path_factory, moto_endpoint):
    """Pools + `prefect deploy --all` on the session server + a process worker, with a local settings block."""
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("deploy")
    api = PREFECT_API_URL.value()
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(root / "prefect-home"),
        "DO_NOT_TRACK": "1",
        "DICOM_ETL_SETTINGS_BLOCK": "e2e-local",
        "DICOM_ETL_DEID_SECRET": "e2e-secret",
        "PYTHONUNBUFFERED": "1",
        **_aws_env(moto_endpoint),
    }
    s = Stack(root)
    s.api = api
    s.earlier_runs = s.all_flow_run_ids()
    try:
        s.env = {**env, "PREFECT": f"{sys.executable} -m prefect"}
        s.run(["bash", str(ROOT / "deployments" / "create-pools.sh")], timeout=300)
        incoming, lake, warehouse = root / "incoming", root / "lake", root / "warehouse.duckdb"
        incoming.mkdir()
        s.run([sys.executable, "-c", (
            "from blocks.settings import DicomPipelineSettings as S;"
            f"S(source={str(incoming)!r}, lake={str(lake)!r}, warehouse={str(warehouse)!r}, batch_size=50,"
            "deid_secret='e2e-secret').save('e2e-local', overwrite=True)"
        )])
        s.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], timeout=600)
        # as the docs say: no variable names the project, and the worker runs from another folder;
        # polling as prefect.yaml advises (Prefect's default: every 10 s)
        s.start("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", "dicom-process",
                           "--type", "process", "--limit", "2"],
                {**s.env, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}, cwd=root)
        s.incoming, s.lake, s.warehouse = incoming, lake, warehouse
        yield s
    finally:
        s.stop()
        _delete_what_deploy_created()


def _delete_what_deploy_created() -> None:
    """Delete the module's automations and deployments: later modules' events must start no run.

    Through Prefect's client, which retries the 503 a busy SQLite server answers.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if automation.name in AUTOMATIONS:
                client.delete_automation(automation.id)
        for deployment in client.read_deployments():
            if deployment.name in DEPLOYMENTS:
                client.delete_deployment(deployment.id)


def _aws_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def _wait(predicate, timeout: float, what: str, stack: Stack | None = None, every: float = 2.0):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{stack.logs() if stack else ''}")


def _settled_runs(stack: Stack, *, want_ingest: int) -> list[dict] | None:
    """All runs once at least `want_ingest` ingest runs (which build the warehouse themselves) are terminal."""
    runs = stack.flow_runs()
    ingest = [r for r in runs if r["deployment_name"] == "ingest-dicom/provider"]
    busy = [r for r in runs if r["state_type"] not in TERMINAL and r["deployment_name"]]
    if len(ingest) >= want_ingest and not busy:
        return runs
    return None


def test_deploy_created_every_deployment_and_trigger(stack):
    deployments = [d for d in httpx.post(f"{stack.api}/deployments/filter", json={}).json() if d["name"] in DEPLOYMENTS]
    assert {d["name"] for d in deployments} == DEPLOYMENTS
    automations = httpx.post(f"{stack.api}/automations/filter", json={}).json()
    assert AUTOMATIONS <= {a["name"] for a in automations}
    for deployment in deployments:
        [step] = deployment["pull_steps"]
        directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
        assert Path(directory) == ROOT, (deployment["name"], directory)  # recorded at deploy time


def test_files_dropped_in_a_watched_folder_end_as_warehouse_rows(stack, synthetic_dir, pydicom_dir):
    stack.start("watcher", [sys.executable, "-m", "flows", "watch", "--folder", str(stack.incoming), "--interval", "1"])
    shutil.copytree(synthetic_dir, stack.incoming / "siteA")
    odd = stack.incoming / "siteB"
    odd.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "no_meta.dcm"):
        shutil.copy(pydicom_dir / name, odd / name)
    (odd / "notes.txt").write_text("not a DICOM file")

    runs = _wait(lambda: _settled_runs(stack, want_ingest=1), 900, "ingest and dbt runs to finish", stack, every=2)
    by_deployment = {}
    for r in runs:
        by_deployment.setdefault(r["deployment_name"], []).append(r["state_type"])
    assert set(by_deployment["ingest-dicom/provider"]) == {"COMPLETED"}, (by_deployment, stack.logs())
    # the provider run built the warehouse itself: no second deployment hop
    assert "build-warehouse/rebuild" not in by_deployment, by_deployment
    # two folders arrived at once: two provider runs, the second queued behind the deployment's
    # limit of 1 and asking for the slot again every 5 s (SERVER_ENV), not Prefect's 30 s
    waits = _slot_waits([r["id"] for r in runs if r["deployment_name"] == "ingest-dicom/provider"], stack)
    assert waits and max(waits) <= 10, waits
    # the warehouse build is a subflow of the provider run; every top-level run came from a deployment
    top_level = [r for r in runs if r["parent_task_run_id"] is None]
    assert top_level and all(r["deployment_name"] for r in top_level), "every top-level run came from a deployment"
    with duckdb.connect(str(stack.warehouse), read_only=True) as con:
        images = con.sql("select count(*) from processed.images").fetchone()[0]
        patients = con.sql("select count(*) from processed.patients").fetchone()[0]
    assert images >= 24 + 3 and patients >= 3

    ingest = [r for r in runs if r["deployment_name"] == "ingest-dicom/provider"]
    artifacts = httpx.post(
        f"{stack.api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [r["id"] for r in ingest]}}}
    ).json()
    assert {"ingest-summary", "ingest-counts", "ingest-quarantine"} <= {a["key"] for a in artifacts}
    quarantine = [a for a in artifacts if a["key"] == "ingest-quarantine"]
    reasons = {row["reason"] for a in quarantine for row in json.loads(a["data"])}
    assert "not_dicom" in reasons
    assert not any("notes.txt" in json.dumps(a["data"]) for a in quarantine), "no keys at info level"
    task_runs = httpx.post(
        f"{stack.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [r["id"] for r in ingest]}}, "limit": 200}
    ).json()
    assert any(t["name"].startswith("extract-") for t in task_runs)

    def one_completed_per_run() -> list[dict] | None:
        # the server stores events a few seconds after they arrive
        events = _events(stack, "dicom.ingest.completed", id=[f"dicom.ingest.{r['id']}" for r in ingest])
        return events if len(events) == len(ingest) else None

    completed = _wait(one_completed_per_run, 60, "each provider run's dicom.ingest.completed", stack, every=1)
    assert all(e["payload"]["lake"] == str(stack.lake) for e in completed)
    assert any(
        e["resource"]["dicom.has_new_rows"] == "true" and e["payload"]["new_rows"]["images"] > 0 for e in completed
    )
    assert all(e["resource"]["dicom.build_requested"] == "false" for e in completed)
    assert _events(stack, "dicom.batch.written", labels={"dicom.lake": str(stack.lake)})


def test_ingest_completed_starts_a_build_only_when_asked(stack):
    """`dicom.ingest.completed` starts build-warehouse/rebuild only with build_requested, with the run's settings block."""
    from uuid import uuid4

    before = {r["id"] for r in stack.flow_runs()}

    def completed(requested: bool) -> dict:
        return {
            "id": str(uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": "dicom.ingest.completed",
            "resource": {"prefect.resource.id": f"dicom.ingest.{uuid4()}", "dicom.has_new_rows": "true",
                         "dicom.warehouse_built": "false", "dicom.build_requested": "true" if requested else "false"},
            "payload": {"source": str(stack.incoming), "lake": str(stack.lake), "warehouse": str(stack.warehouse),
                        "settings_block": "e2e-local", "files": 1, "new_rows": {"images": 1}, "rejected": {}},
        }

    httpx.post(f"{stack.api}/events", json=[completed(False), completed(True)], timeout=30).raise_for_status()

    def rebuilt():
        runs = [r for r in stack.flow_runs() if r["id"] not in before and r["deployment_name"] == "build-warehouse/rebuild"]
        return runs if runs and all(r["state_type"] in TERMINAL for r in runs) else None

    runs = _wait(rebuilt, 600, "the requested warehouse build to finish", stack, every=2)
    time.sleep(3)  # a second (unrequested) run would have been scheduled by now
    runs = [r for r in stack.flow_runs() if r["id"] not in before and r["deployment_name"] == "build-warehouse/rebuild"]
    assert len(runs) == 1, runs
    assert runs[0]["state_type"] == "COMPLETED", stack.logs()
    assert runs[0]["parameters"]["settings_block"] == "e2e-local"


def _slot_waits(flow_run_ids: list[str], stack: Stack) -> list[float]:
    """Seconds each AwaitingConcurrencySlot state of these runs was scheduled ahead."""
    waits = []
    for run_id in flow_run_ids:
        states = httpx.get(f"{stack.api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
        for st in states:
            if st["name"] == "AwaitingConcurrencySlot":
                scheduled = datetime.fromisoformat(st["state_details"]["scheduled_time"])
                waits.append((scheduled - datetime.fromisoformat(st["timestamp"])).total_seconds())
    return waits


def _events(stack: Stack, name: str, **resource) -> list[dict]:  # noqa: ANN003 - Prefect's event resource filter
    # of this module's runs: other modules' ingests emit these events on the session server too
    body = {"filter": {"event": {"name": [name]}, "occurred": {"since": stack.started.isoformat()},
                       "resource": resource}, "limit": 50}
    return httpx.post(f"{stack.api}/events/filter", json=body, timeout=30).json()["events"]


# --- S3 -> SQS -> bridge ------------------------------------------------------------


def test_uploads_to_the_provider_bucket_end_as_warehouse_rows(stack, moto_endpoint, synthetic_dir):
    import io
    import zipfile

    import boto3

    aws = _aws_env(moto_endpoint)
    s3, sqs = (boto3.client(name, endpoint_url=moto_endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing") for name in ("s3", "sqs"))
    s3.create_bucket(Bucket="deploy-provider")  # names of its own on the session's moto server
    queue = sqs.create_queue(QueueName="deploy-provider-events")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="deploy-provider-events-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket="deploy-provider",
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    # the provider deployment ingests its configured source; events only narrow what a run lists
    stack.run([sys.executable, "-c", (
        "from blocks.settings import DicomPipelineSettings as S;"
        f"S(source='s3://deploy-provider/upload/', lake={str(stack.lake)!r}, warehouse={str(stack.warehouse)!r},"
        "batch_size=50, deid_secret='e2e-secret').save('e2e-local', overwrite=True)"
    )])
    before = {r["id"] for r in stack.flow_runs()}
    stack.start("bridge", [sys.executable, "-m", "flows", "bridge", "--queue-url", queue, "--dlq-url", dlq,
                           "--window", "3"], {**stack.env, **aws})
    files = sorted(p for p in synthetic_dir.rglob("*") if p.is_file())
    for path in files[: len(files) // 2]:
        s3.put_object(Bucket="deploy-provider", Key=f"upload/site 1/{path.relative_to(synthetic_dir).as_posix()}",
                      Body=path.read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in files[len(files) // 2 :]:
            zf.writestr(path.relative_to(synthetic_dir).as_posix(), path.read_bytes())
    s3.put_object(Bucket="deploy-provider", Key="upload/study.zip", Body=buf.getvalue())

    def new_runs_done():
        runs = [r for r in stack.flow_runs() if r["id"] not in before]
        ingest = [r for r in runs if r["deployment_name"] == "ingest-dicom/provider"]
        if ingest and all(r["state_type"] in TERMINAL for r in runs):
            return runs
        return None

    runs = _wait(new_runs_done, 900, "runs started by S3 uploads to finish", stack, every=2)
    assert {r["state_type"] for r in runs} == {"COMPLETED"}, stack.logs()
    read = {r["parameters"].get("within") for r in runs if r["deployment_name"] == "ingest-dicom/provider"}
    assert read and all(src.startswith("s3://deploy-provider/upload/") for src in read), read
    raw = duckdb.sql(
        f"select source_key from read_parquet('{stack.lake}/tables/images/**/*.parquet', union_by_name=true)"
    ).fetchall()
    keys = {k for (k,) in raw}
    assert any("site 1/" in k for k in keys), "loose uploads (a key with a space) reached the lake"
    assert any("study.zip" in k for k in keys), "members of the uploaded ZIP reached the lake"
    with duckdb.connect(str(stack.warehouse), read_only=True) as con:
        assert con.sql("select count(*) from processed.images").fetchone()[0] >= len(files)
    assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_the_compress_pool_runs_as_the_docs_say(stack, synthetic_dir, pydicom_dir):
    """`prefect worker start --pool dicom-compress` (README, prefect.yaml) renders each batch's previews.

    ingest-dicom/local runs in deployment mode: two batches, two compress-dicom/remote runs on the
    compress pool's worker, every preview and archive in the lake, the undecodable file an error row.
    """
    stack.start("compress-worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", "dicom-compress"],
                {**stack.env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, cwd=stack.root)
    source, lake = stack.root / "compress-in", stack.root / "compress-lake"
    shutil.copytree(synthetic_dir, source / "synthetic")
    shutil.copy(pydicom_dir / "JPEG-lossy.dcm", source / "undecodable.dcm")  # pixel_decode
    stack.run([sys.executable, "-c", (
        "from blocks.settings import DicomPipelineSettings as S;"
        f"S(source={str(source)!r}, lake={str(lake)!r}, warehouse={str(stack.root / 'c.duckdb')!r},"
        # 25 files: two batches, so two compress-dicom runs
        " batch_size=13, compression='deployment', deid_secret='e2e-secret').save('e2e-compress', overwrite=True)"
    )])
    before = {r["id"] for r in stack.flow_runs()}
    stack.run([sys.executable, "-m", "prefect", "deployment", "run", "ingest-dicom/local",
               "-p", "settings_block=e2e-compress", "-p", "run_dbt=false", "-p", "transcode=true"])

    def done():
        runs = [r for r in stack.flow_runs() if r["id"] not in before and r["deployment_name"]]
        ingest_seen = any(r["deployment_name"] == "ingest-dicom/local" for r in runs)
        if ingest_seen and all(r["state_type"] in TERMINAL for r in runs):
            return runs
        return None

    runs = _wait(done, 900, "ingest-dicom/local and its compress-dicom/remote runs", stack, every=2)
    assert {r["state_type"] for r in runs} == {"COMPLETED"}, stack.logs()
    assert sum(r["deployment_name"] == "compress-dicom/remote" for r in runs) == 2, runs

    def table(name: str) -> str:
        return f"read_parquet('{lake}/tables/{name}/**/*.parquet', union_by_name=true)"

    n_pixel = duckdb.sql(f"select count(*) from {table('images')} where has_pixel_data").fetchone()[0]
    previews = duckdb.sql(f"select preview_key from {table('previews')}").fetchall()
    assert len(previews) == n_pixel - 1  # all but the undecodable one
    assert all((lake / key).read_bytes()[:2] == b"\xff\xd8" for (key,) in previews)
    assert duckdb.sql(f"select reason from {table('ingest_errors')}").fetchall() == [("pixel_decode",)]
    archived = duckdb.sql(f"select archive_key from {table('archives')} where status = 'archived'").fetchall()
    assert archived and all((lake / k).is_file() for (k,) in archived)
