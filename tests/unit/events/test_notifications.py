"""S3 notification parsing, burst grouping and event shapes (pure functions)."""

from __future__ import annotations

import json

import pytest

from tasks.events.notifications import (
    MAX_KEYS_IN_EVENT,
    OBJECTS_ARRIVED,
    CreatedObject,
    PoisonMessage,
    arrival_event,
    common_prefix,
    group_arrivals,
    object_event,
    parse_s3_notification,
    settled_objects,
)


def _record(key: str, *, bucket: str = "provider", name: str = "ObjectCreated:Put", size: int = 10) -> dict:
    return {
        "eventName": name,
        "eventTime": "2026-01-02T03:04:05.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": '"abc"', "sequencer": "01"}},
    }


def test_keys_are_decoded_and_etags_unquoted():
    body = json.dumps({"Records": [_record("site+1/%C3%A9+%2B/a%2Bb.dcm")]})
    [obj] = parse_s3_notification(body)
    assert obj.key == "site 1/é +/a+b.dcm"
    assert (obj.bucket, obj.size, obj.etag, obj.event_time) == ("provider", 10, "abc", "2026-01-02T03:04:05.000Z")


def test_test_events_and_removals_give_nothing():
    assert parse_s3_notification(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert parse_s3_notification(json.dumps({"Records": [_record("a.dcm", name="ObjectRemoved:Delete")]})) == []


def test_sns_wrapped_notifications_are_unwrapped():
    inner = json.dumps({"Records": [_record("x/y.dcm")]})
    [obj] = parse_s3_notification(json.dumps({"Type": "Notification", "Message": inner}))
    assert obj.key == "x/y.dcm"


@pytest.mark.parametrize(
    ("body", "reason"),
    [("not json", "not_json"), ("[1, 2]", "no_records"), ('{"foo": 1}', "no_records"),
     ('{"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}', "malformed_record")],
)
def test_poison_messages_say_why(body, reason):
    with pytest.raises(PoisonMessage) as info:
        parse_s3_notification(body)
    assert info.value.reason == reason


def test_common_prefix_is_a_folder():
    assert common_prefix(["a/b/1.dcm", "a/b/c/2.dcm"]) == "a/b/"
    assert common_prefix(["a/bc/1", "a/bd/2"]) == "a/"
    assert common_prefix(["1.dcm"]) == ""


def test_a_thousand_uploads_make_a_few_arrivals():
    objs = [CreatedObject("provider", f"site{i % 3}/study{i % 7}/img{i}.dcm", 1, f"e{i}", "t") for i in range(1000)]
    objs += objs[:50]  # S3 delivers at least once
    arrivals = group_arrivals(objs)
    assert [(a.prefix, a.count) for a in arrivals] == [("site0/", 334), ("site1/", 333), ("site2/", 333)]
    assert len(group_arrivals(objs, depth=0)) == 1
    assert len(group_arrivals(objs, depth=2)) == 21


def test_arrival_event_carries_the_source_prefix_and_count():
    objs = [CreatedObject("provider", f"up/s1/{i}.dcm", 5, f"e{i}", f"2026-01-0{i + 1}") for i in range(3)]
    [arrival] = group_arrivals(objs)
    event = arrival_event(arrival)
    assert event["event"] == OBJECTS_ARRIVED
    assert event["resource"]["prefect.resource.id"] == "s3://provider/up/s1/"
    assert event["payload"] | {"keys": None} == {
        "source": "s3://provider/up/s1/", "bucket": "provider", "prefix": "up/s1/", "count": 3, "bytes": 15,
        "first_event_time": "2026-01-01", "last_event_time": "2026-01-03", "keys": None, "keys_truncated": False,
    }
    assert arrival_event(arrival)["id"] == event["id"], "a redelivered burst has the same event id"
    folder = arrival_event(group_arrivals([CreatedObject("/data/in", "a/b.dcm", 1, "e", "t")])[0], scheme="file")
    assert folder["payload"]["source"] == "/data/in/a/", "only what arrived is read; keys stay relative to the source"
    assert folder["resource"]["prefect.resource.id"] == "file:///data/in/a/"


def test_arrival_event_lists_a_bounded_number_of_keys():
    objs = [CreatedObject("b", f"p/{i:05}.dcm", 1, "e", "t") for i in range(MAX_KEYS_IN_EVENT + 10)]
    payload = arrival_event(group_arrivals(objs)[0])["payload"]
    assert len(payload["keys"]) == MAX_KEYS_IN_EVENT and payload["keys_truncated"] and payload["count"] == len(objs)


def test_object_event_names_the_object():
    event = object_event(CreatedObject("provider", "a b/c.dcm", 3, "etag", "t"))
    assert event["resource"]["prefect.resource.id"] == "s3://provider/a b/c.dcm"
    assert event["payload"] == {"bucket": "provider", "key": "a b/c.dcm", "size": 3, "etag": "etag", "event_time": "t"}


def test_a_file_is_reported_once_it_stops_changing():
    reported: dict[str, str] = {}
    assert settled_objects({}, [("a", 1, "v1")], reported) == []
    assert settled_objects({"a": (1, "v1")}, [("a", 2, "v2")], reported) == []  # still growing
    assert settled_objects({"a": (2, "v2")}, [("a", 2, "v2")], reported) == [("a", 2, "v2")]
    reported["a"] = "v2"
    assert settled_objects({"a": (2, "v2")}, [("a", 2, "v2")], reported) == []


def test_backfill_dates_are_inclusive_and_checked():
    from datetime import date

    from flows.backfill import date_range

    assert date_range(date(2024, 2, 28), date(2024, 3, 1)) == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]
    assert date_range(date(2024, 1, 1), date(2024, 1, 1)) == [date(2024, 1, 1)]
    with pytest.raises(ValueError, match="before its start"):
        date_range(date(2024, 1, 2), date(2024, 1, 1))
