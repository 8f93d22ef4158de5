"""The S3 -> SQS -> Prefect events bridge and the folder watcher, on moto's server and a real Prefect server."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from flows.bridge import FolderWatcher, bridge_once, run_bridge, send_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """moto's standalone server on 127.0.0.1, reached through the usual AWS environment variables."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    mp = pytest.MonkeyPatch()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        mp.setenv(key, value)
    yield
    mp.undo()
    server.stop()


@pytest.fixture
def bucket(aws, request):
    """A bucket that notifies a fresh SQS queue of created objects; and a dead-letter queue."""
    import boto3

    name = request.node.name.replace("_", "-")[:40]
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    s3.create_bucket(Bucket=name)
    queue = sqs.create_queue(QueueName=f"{name}-events")["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    return {"name": name, "s3": s3, "sqs": sqs, "queue": queue, "dlq": dlq}


def _events(name: str, resource_prefix: str) -> list[dict]:
    """Events the Prefect server stored (read back over its HTTP API)."""
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}, "resource": {"id_prefix": [resource_prefix]},
                       "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
    api = PREFECT_API_URL.value()
    page = httpx.post(f"{api}/events/filter", json=body, timeout=30).json()
    events = page["events"]
    while page.get("next_page"):
        page = httpx.get(page["next_page"], timeout=30).json()
        events += page["events"]
    return events


def _queue_size(sqs, queue: str) -> int:  # noqa: ANN001
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _until(predicate, timeout: float = 60):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    pytest.fail("timed out")


def test_a_burst_of_uploads_becomes_a_few_events_and_poison_goes_to_the_dlq(prefect_server, bucket):
    s3, sqs, name = bucket["s3"], bucket["sqs"], bucket["name"]
    for i in range(40):
        s3.put_object(Bucket=name, Key=f"site {i % 2}/study+{i % 4}/é{i}.dcm", Body=b"x" * (i + 1))
    sqs.send_message(QueueUrl=bucket["queue"], MessageBody="this is not an S3 notification")

    stop = threading.Event()
    thread = threading.Thread(
        target=run_bridge, args=(bucket["queue"],),
        kwargs={"dlq_url": bucket["dlq"], "window_seconds": 2, "wait_seconds": 1, "stop": stop, "sqs": sqs},
    )
    thread.start()
    try:
        _until(lambda: _queue_size(sqs, bucket["queue"]) == 0)
    finally:
        stop.set()
        thread.join(30)

    [dead] = sqs.receive_message(QueueUrl=bucket["dlq"], MessageAttributeNames=["All"])["Messages"]
    assert dead["Body"] == "this is not an S3 notification"
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "not_json"

    arrived = _until(lambda: (e := _events("dicom.objects.arrived", f"s3://{name}/")) and len(e) >= 2 and e)
    counts = sorted((e["payload"]["prefix"], e["payload"]["count"]) for e in arrived)
    assert counts == [("site 0/", 20), ("site 1/", 20)]
    assert {e["payload"]["source"] for e in arrived} == {f"s3://{name}/site 0/", f"s3://{name}/site 1/"}
    created = _until(lambda: (e := _events("dicom.object.created", f"s3://{name}/")) and len(e) >= 40 and e)
    keys = {e["payload"]["key"] for e in created}
    assert "site 1/study+3/é3.dcm" in keys and len(keys) == 40
    assert all(e["payload"]["etag"] and e["payload"]["size"] > 0 for e in created)


def test_messages_stay_on_the_queue_until_their_events_are_accepted(prefect_server, bucket):
    s3, sqs, name = bucket["s3"], bucket["sqs"], bucket["name"]
    for i in range(5):
        s3.put_object(Bucket=name, Key=f"batch/{i}.dcm", Body=b"x")

    def api_down(events):  # noqa: ANN001, ANN202 - the Prefect API refusing the events
        raise ConnectionError("Prefect API unreachable")

    with pytest.raises(ConnectionError):
        bridge_once(sqs, bucket["queue"], window_seconds=1, wait_seconds=1, visibility_timeout=1, send=api_down)
    assert _queue_size(sqs, bucket["queue"]) >= 1, "nothing deleted"
    time.sleep(1.5)
    counts = bridge_once(sqs, bucket["queue"], window_seconds=1, wait_seconds=1, send=send_events)
    assert counts["objects"] == 5 and _queue_size(sqs, bucket["queue"]) == 0
    arrived = _until(lambda: _events("dicom.objects.arrived", f"s3://{name}/batch/"))
    assert arrived[0]["payload"]["count"] == 5


def test_the_folder_watcher_reports_settled_files_once(prefect_server, tmp_path):
    (tmp_path / "study1").mkdir()
    for i in range(3):
        (tmp_path / "study1" / f"{i}.dcm").write_bytes(b"x")
    watcher = FolderWatcher(tmp_path)
    assert watcher.poll() == 0  # first sight: maybe still being copied
    assert watcher.poll() == 3
    assert watcher.poll() == 0
    (tmp_path / "study1" / "3.dcm").write_bytes(b"y")
    watcher.poll()
    assert watcher.poll() == 1
    arrived = _until(lambda: (e := _events("dicom.objects.arrived", f"file://{tmp_path}/")) and len(e) >= 2 and e)
    assert sorted(e["payload"]["count"] for e in arrived) == [1, 3]
    assert {e["payload"]["source"] for e in arrived} == {f"{tmp_path}/study1/"}
