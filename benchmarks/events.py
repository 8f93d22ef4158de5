"""Upload to warehouse rows through the real path, hop by hop.

moto's S3 and SQS (a bucket notifying a queue) -> ``python -m flows bridge`` ->
``dicom.objects.arrived`` -> the ``ingest-dicom/provider`` deployment's trigger -> a process
worker (polling as prefect.yaml advises) -> ingest and the incremental warehouse build in
the same flow run. Each hop's time comes from what the services recorded: the upload's
clock, the event's ``occurred``, the flow run's ``created``, ``start_time`` and
``end_time``, then rows visible in ``processed.images``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Processes:
    """Processes started for the benchmark, stopped in reverse order."""

    root: Path
    procs: list[tuple[subprocess.Popen, object]]

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.root / f"{name}.log").open("w")
        self.procs.append((subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))

    def stop(self) -> None:
        for proc, log in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def _wait(what: str, check, timeout: float, every: float = 0.25):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None:
            return found
        time.sleep(every)
    msg = f"timed out after {timeout:.0f} s waiting for {what}"
    raise TimeoutError(msg)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def bench_events(work: Path, api: str, *, files: list[Path], window: float, poll_seconds: int) -> list[tuple[str, float]]:
    """Upload ``files`` to the provider bucket; seconds from the upload to each hop, in order."""
    import boto3
    import duckdb
    from moto.server import ThreadedMotoServer

    from flows.cli import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    lake, warehouse = work / "lake", work / "warehouse.duckdb"
    env = {**os.environ, **aws, "PREFECT_API_URL": api, "DICOM_ETL_SETTINGS_BLOCK": "bench-events",
           "DICOM_ETL_DEID_SECRET": "benchmark-secret", "PYTHONUNBUFFERED": "1"}
    procs = Processes(work, [])
    try:
        s3, sqs = (boto3.client(n, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing") for n in ("s3", "sqs"))
        s3.create_bucket(Bucket="provider")
        queue = sqs.create_queue(QueueName="provider-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket="provider",
            NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
        )
        subprocess.run(["bash", str(ROOT / "deployments" / "create-pools.sh")], cwd=ROOT, env={**env, "PREFECT": f"{sys.executable} -m prefect"},
                       check=True, capture_output=True)
        block = (
            "from blocks.settings import DicomPipelineSettings as S;"
            f"S(source='s3://provider/', lake={str(lake)!r}, warehouse={str(warehouse)!r}, deid_secret='benchmark-secret')"
            ".save('bench-events', overwrite=True)"
        )
        subprocess.run([sys.executable, "-c", block], cwd=ROOT, env=env, check=True)
        subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "provider"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds), "PREFECT_WORKER_PREFETCH_SECONDS": str(poll_seconds)}
        procs.start("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", "dicom-process", "--type", "process"], worker_env)
        procs.start("bridge", [sys.executable, "-m", "flows", "bridge", "--queue-url", queue, "--window", str(window)], env)
        time.sleep(10)  # the worker and the bridge are up and polling
        client = httpx.Client(base_url=api, timeout=30)
        before = {r["id"] for r in client.post("/flow_runs/filter", json={"limit": 200}).json()}
        uploaded = time.time()
        for path in files:
            s3.put_object(Bucket="provider", Key=f"upload/{path.name}", Body=path.read_bytes())

        def first_event(name: str, stamp: str = "occurred") -> float | None:
            """When the first event ``name`` since the upload occurred (or was ``received`` by the server)."""
            body = {"filter": {"event": {"name": [name]}, "occurred": {"since": datetime.fromtimestamp(uploaded - 5, UTC).isoformat()}}}
            events = client.post("/events/filter", json=body).json()["events"]
            return min(_ts(e[stamp]) for e in events) if events else None

        def entered(run_id: str, state_type: str) -> float | None:
            states = client.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
            return min((_ts(st["timestamp"]) for st in states if st["type"] == state_type), default=None)

        def finished() -> dict | None:
            # the provider deployment's run: the warehouse build is a subflow of it, created and ended later
            runs = [r for r in client.post("/flow_runs/filter", json={"limit": 200}).json()
                    if r["id"] not in before and r["parent_task_run_id"] is None]
            done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            return done[0] if done else None

        run = _wait("the provider flow run to finish", finished, 600)
        if run["state_type"] != "COMPLETED":
            msg = f"the provider run ended {run['state_type']}; see {work}/worker.log"
            raise RuntimeError(msg)
        with duckdb.connect(str(warehouse), read_only=True) as con:
            rows = con.execute("select count(*) from processed.images").fetchone()[0]
        rows_seen = time.time()
        if rows < len(files):
            msg = f"{rows} rows in processed.images after the run, {len(files)} files uploaded"
            raise RuntimeError(msg)
        event = first_event("dicom.objects.arrived") or uploaded
        hops = [
            ("upload -> dicom.objects.arrived (SQS, bridge window)", event),
            ("-> the server received the event", first_event("dicom.objects.arrived", "received") or event),
            ("-> the automation triggered", first_event("prefect.automation.triggered") or event),
            ("-> flow run created and scheduled", _ts(run["created"])),
            ("-> picked up by the worker (Pending)", entered(run["id"], "PENDING") or _ts(run["created"])),
            ("-> flow run started (process start, imports)", _ts(run["start_time"])),
            ("-> flow run ended (ingest + warehouse build)", _ts(run["end_time"])),
            ("-> rows read in processed.images", rows_seen),
        ]
        return [(label, at - uploaded) for label, at in hops]
    finally:
        procs.stop()
        moto.stop()


def main(args: argparse.Namespace) -> int:
    """``python -m flows bench events``: upload, then print when each hop happened."""
    from benchmarks.ingest import _start_server
    from tasks.dicom.corpus import generate_corpus

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dicom-bench-events-"))
    generate_corpus(work / "upload", files=args.files, profile="small", seed=3)
    files = sorted(p for p in (work / "upload").rglob("*") if p.is_file())
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; workdir {work}")
    server, api = _start_server()
    try:
        hops = bench_events(work, api, files=files, window=args.window, poll_seconds=args.poll)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    previous = 0.0
    for label, at in hops:
        print(f"  {label:<52} at {at:6.1f} s  (+{at - previous:5.1f} s)")
        previous = at
    print(f"upload -> rows: {hops[-1][1]:.1f} s (target 30 s); load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0
