"""The pure side of HTTP ingest: native batches, emoncms's input API (names, units, bulk time
references as emoncms documents them), the token bucket, and the API keys in every store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.emoncms import classify, input_bulk, input_post, parse_node_names
from pipeline.ingest.http_request import native_batch
from pipeline.ingest.rate_limit import RateLimiter, TokenBucket
from pipeline.records import DeviceKind
from pipeline.settings import ValidationSettings

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
V = ValidationSettings()


def test_native_batch_judges_each_item_as_the_flow_does():
    body = orjson.dumps([
        {"device_id": "plug", "power_w": 10, "ts": "2026-03-01T11:59:00Z"},
        {"device_id": "meter", "power_w": 500, "energy_kwh": 1.5, "kind": "meter"},
        {"device_id": "bad", "power_w": 1e9},
        {"power_w": 1},
        {"device_id": "x/y", "power_w": 1},
        {"device_id": "other", "home_id": "h2", "power_w": 1},
        "not an object",
    ])
    out = native_batch(body, "h1", None, "/api/v1/homes/h1/readings", NOW, V)
    assert [(r.home_id, r.device_id, r.power_w) for r in out.readings] == [("h1", "plug", 10.0),
                                                                          ("h1", "meter", 500.0)]
    assert out.readings[0].ts == NOW - timedelta(minutes=1)
    assert out.readings[1].ts == NOW and out.readings[1].energy_wh == 1500.0
    assert out.readings[1].kind is DeviceKind.METER
    assert [(r.index, r.error) for r in out.rejections] == [
        (2, "out_of_bounds"), (3, "missing_field"), (4, "bad_id"), (5, "bad_id"), (6, "invalid_payload")]
    assert out.status == 400 and out.body()["accepted"] == 2
    assert all(d.step == "http" and d.topic.startswith("http:/api/v1/homes/h1/readings#")
               for d in out.dead_letters)


def test_native_body_bounds():
    out = native_batch(b"{" * 40, "h1", "d", "/p", NOW, V)
    assert out.status == 400 and out.rejections[0].error in ("too_deep", "invalid_json")
    out = native_batch(b'{"power_w": NaN}', "h1", "d", "/p", NOW, V)
    assert out.rejections[0].error == "invalid_json"
    out = native_batch(b"x" * (V.max_payload_bytes + 1), "h1", "d", "/p", NOW, V)
    assert out.status == 413 and out.dead_letters[0].error == "too_large"
    one = native_batch(b'{"power_w": 5}', "h1", "d", "/p", NOW, V)
    assert one.status == 200 and one.readings[0].device_id == "d"


@pytest.mark.parametrize("name,expected", [
    ("power", ("power_w", "")), ("P", ("power_w", "")), ("W", ("power_w", "")),
    ("power1", ("power_w", "1")), ("P2", ("power_w", "2")), ("power_Solar", ("power_w", "solar")),
    ("E1", ("energy_wh", "1")), ("wh", ("energy_wh", "")), ("kWh3", ("energy_kwh", "3")),
    ("vrms", ("voltage_v", "")), ("irms2", ("current_a", "2")),
    ("pulse", None), ("temp1", None), ("humidity", None), ("pv", None), ("rssi", None), ("1", None),
])
def test_emoncms_names(name, expected):
    assert classify(name) == expected


def test_emoncms_post_maps_channels_units_and_node():
    params = {"node": "emontx", "fulljson": orjson.dumps(
        {"power1": 120, "E1": 5012, "power2": 30.5, "kwh2": 1.25, "vrms": 239.1, "temp": 21}).decode()}
    out = input_post(params, None, "h1", "/input/post", NOW, V)
    assert out.status == 200
    got = {r.device_id: (r.power_w, r.energy_wh, r.voltage_v) for r in out.readings}
    assert got == {"emontx:1": (120.0, 5012.0, 239.1), "emontx:2": (30.5, 1250.0, 239.1)}
    assert all(r.ts == NOW for r in out.readings)

    lenient = input_post({"json": "{power:200,vrms:230}", "time": str(int(NOW.timestamp()) - 60)},
                         "plug", "h1", "/input/post/plug", NOW, V)
    assert [(r.device_id, r.power_w, r.voltage_v, r.ts) for r in lenient.readings] == [
        ("plug", 200.0, 230.0, NOW - timedelta(seconds=60))]
    assert input_post({"node": "0", "json": "{power:1}", "kind": "meter"}, None, "h1", "/p", NOW,
                      V).readings[0].kind is DeviceKind.METER


def test_emoncms_post_rejections_are_dead_letters():
    def error(params):
        out = input_post(params, None, "h1", "/input/post", NOW, V)
        assert out.status == 400 and not out.readings and out.dead_letters[0].step == "http"
        assert "apikey" not in out.dead_letters[0].payload
        return out.rejections[0].error

    assert error({"node": "n", "csv": "100,200", "apikey": "secret"}) == "missing_field"  # no names
    assert error({"node": "n", "fulljson": "{\"E3\": 5}"}) == "missing_field"  # metering, no power
    assert error({"node": "n", "fulljson": "{\"power\": \"abc\"}"}) == "invalid_payload"
    assert error({"node": "n", "fulljson": "{\"power\": 1e9}"}) == "out_of_bounds"
    assert error({"node": "n", "fulljson": "[1]"}) == "invalid_payload"
    assert error({"node": "n", "fulljson": "{bad"}) == "invalid_json"
    assert error({"node": "a/b", "fulljson": "{\"power\": 1}"}) == "bad_id"
    assert error({"node": "n"}) == "missing_field"
    assert error({"node": "n", "json": "{power:1}", "time": "yesterday"}) == "bad_timestamp"
    assert error({"node": "n", "json": "{power:1}", "time": "100"}) == "timestamp_too_old"
    # status only (no metering at all): nothing to store, nothing wrong
    quiet = input_post({"node": "emonth", "fulljson": "{\"temp\": 20, \"humidity\": 50}"}, None,
                       "h1", "/p", NOW, V)
    assert quiet.status == 200 and not quiet.readings and not quiet.dead_letters


def _bulk_times(params):
    out = input_bulk(params, "h1", "/input/bulk", NOW, V)
    assert out.status == 200, out.rejections
    return [(r.device_id, r.ts) for r in out.readings]


def test_emoncms_bulk_time_references():
    """The four modes of emoncms's input API page, with its own examples."""
    data = '[[0,16,{"power":1137}],[2,17,{"P":1437}],[4,19,{"W":1412},{"vrms":240}]]'
    # legacy: the last item just arrived (4 is now, 0 is 4 s ago)
    assert _bulk_times({"data": data}) == [("16", NOW - timedelta(seconds=4)),
                                           ("17", NOW - timedelta(seconds=2)), ("19", NOW)]
    data = '[[-10,16,{"power":1}],[-8,17,{"power":2}],[-6,19,{"power":3}]]'
    # offset=-10: -6 is 16 s ago
    assert _bulk_times({"data": data, "offset": "-10"})[2] == ("19", NOW - timedelta(seconds=16))
    # time=T: -6 is T - 6
    t = int(NOW.timestamp()) - 100
    assert _bulk_times({"data": data, "time": str(t)})[2] == ("19", NOW - timedelta(seconds=106))
    data = '[[520,16,{"power":1}],[530,17,{"power":2}],[535,19,{"power":3}]]'
    # sentat=543: the sender's clock read 543 when it sent, so 535 is 8 s ago
    assert _bulk_times({"data": data, "sentat": "543"}) == [
        ("16", NOW - timedelta(seconds=23)), ("17", NOW - timedelta(seconds=13)),
        ("19", NOW - timedelta(seconds=8))]


def test_emoncms_positional_inputs_named_per_node():
    """emonhub sends values by position (and its rssi last): the operator names them per node."""
    names = parse_node_names("10=power1,,power2,vrms; emontx=P")
    assert names == {"10": ("power1", "", "power2", "vrms"), "emontx": ("P",)}
    out = input_bulk({"data": "[[0,10,150,7,30,240,-60],[0,11,5]]", "time": str(int(NOW.timestamp()))},
                     "h1", "/input/bulk", NOW, V, names)
    assert {(r.device_id, r.power_w, r.voltage_v) for r in out.readings} == {("10:1", 150.0, 240.0),
                                                                            ("10:2", 30.0, 240.0)}
    assert [(r.index, r.error) for r in out.rejections] == [(1, "missing_field")]  # node 11: no names
    post = input_post({"node": "emontx", "csv": "99"}, None, "h1", "/p", NOW, V, names)
    assert [(r.device_id, r.power_w) for r in post.readings] == [("emontx", 99.0)]
    for bad in ("10", "=power", "10=", "10=,"):
        with pytest.raises(ValueError):
            parse_node_names(bad)


def test_emoncms_bulk_bad_items():
    out = input_bulk({"data": '[[0,16,{"power":1}],[0,{"x":1},{"power":2}],[0,17],'
                              '[0,18,100],["a",19,{"power":3}]]', "time": str(int(NOW.timestamp()))},
                     "h1", "/input/bulk", NOW, V)
    assert [r.device_id for r in out.readings] == ["16"]
    assert [(r.index, r.error) for r in out.rejections] == [
        (1, "bad_id"), (2, "invalid_payload"), (3, "missing_field"), (4, "bad_timestamp")]
    for data in ("", "{}", "[]", "[[", "[1,2]"):
        assert input_bulk({"data": data}, "h1", "/b", NOW, V).status == 400


@given(st.dictionaries(st.sampled_from(["node", "fulljson", "json", "csv", "data", "time", "kind",
                                        "sentat", "offset"]), st.text(max_size=200)))
@settings(max_examples=300, deadline=None)
def test_emoncms_never_raises(params):
    for out in (input_post(params, None, "h1", "/p", NOW, V),
                input_bulk(params, "h1", "/b", NOW, V)):
        assert out.status in (200, 400)
        assert len(out.rejections) == len(out.dead_letters)


@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20).map(lambda v: json.dumps(v).encode()))  # stdlib: big ints, NaN, as hostile senders
@settings(max_examples=300, deadline=None)
def test_native_never_raises(body):
    out = native_batch(body, "h1", None, "/p", NOW, V)
    assert out.status in (200, 400)
    for reading in out.readings:
        assert reading.home_id == "h1"


def test_token_bucket():
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # refilled one token in half a second
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at the burst
    limiter = RateLimiter(rate=1.0, burst=1.0, max_keys=2)
    assert limiter.take("a", 0.0) == 0.0 and limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0  # keys are apart
    assert limiter.wait("a", 0.5) == pytest.approx(0.5) and limiter.wait("a", 0.5) == pytest.approx(0.5)
    assert limiter.wait("never-seen", 0.0) == 0.0
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_api_keys_in_every_store(store):
    """Stored hashed, one home each, revocable (SQLite, PostgreSQL, TimescaleDB)."""
    from sinks.apikeys import ApiKeys, key_hash

    keys = ApiKeys(store)
    record, key = keys.add("home-a", "emontx")
    other, other_key = keys.add("home-b")
    assert len(key) == 32 and key != other_key
    assert keys.lookup(key).home_id == "home-a" and keys.lookup(other_key).key_id == other.key_id
    assert keys.lookup("nope") is None and keys.lookup("") is None
    stored = keys._rows("SELECT key_hash FROM api_keys WHERE key_id = ?", (record.key_id,))
    assert stored == [(key_hash(key),)] and key not in str(keys._rows("SELECT * FROM api_keys"))
    assert keys.revoke(record.key_id) and not keys.revoke(record.key_id)
    assert keys.lookup(key) is None
    listed = {k.key_id: k for k in keys.list()}
    assert listed[record.key_id].revoked_at is not None and listed[other.key_id].revoked_at is None
    assert listed[record.key_id].label == "emontx"
