"""Every bound at the edge, pinned at its limit and just past it, so loosening one fails a test;
and the inputs that crashed the flow before these bounds, each now a dead letter with its code."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.ingest.decode import DecoderState, decode
from pipeline.ingest.registry import Registry
from pipeline.ingest.validation import validate
from pipeline.reasons import MESSAGES, DeadLetterCode
from pipeline.records import CommandAck, DeadLetter, RawMessage, Reading
from pipeline.settings import TS_CEILING, TS_FLOOR, ValidationSettings
from tests.conftest import FIXTURES

REG = Registry.load(FIXTURES / "registry.toml")
V = ValidationSettings()
NOW = datetime(2024, 2, 1, 8, 16, tzinfo=timezone.utc)
NATIVE = "shems/home-1/plug/reading"
CODES = {c.value for c in DeadLetterCode}


def run(topic: str, body, *, settings: ValidationSettings = V, state=None, now=NOW, registry=REG):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode(state, RawMessage(topic, raw, now), registry, settings)


def accepted(topic: str, body, **kw) -> Reading | CommandAck:
    _, out = run(topic, body, **kw)
    assert len(out) == 1 and isinstance(out[0], (Reading, CommandAck)), out
    return out[0]


def refused(topic: str, body, code: DeadLetterCode, **kw) -> DeadLetter:
    _, out = run(topic, body, **kw)
    assert len(out) == 1 and isinstance(out[0], DeadLetter), out
    dead = out[0]
    assert dead.error == code.value, (dead.error, dead.reason)
    assert dead.step == "decode" and dead.reason
    return dead


def up(x: float) -> float:
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    return math.nextafter(x, -math.inf)


# ------------------------------------------------------------------------- measurements


@pytest.mark.parametrize("field, low, high", [
    ("power_w", V.min_power_w, V.max_power_w),
    ("energy_wh", 0.0, V.max_energy_wh),
    ("voltage_v", V.min_voltage_v, V.max_voltage_v),
    ("current_a", V.min_current_a, V.max_current_a),
])
def test_each_measurement_is_accepted_at_its_bounds_and_refused_just_past_them(field, low, high):
    base = {"power_w": 5.0}
    for value in (low, high):
        reading = accepted(NATIVE, {**base, field: value})
        assert getattr(reading, field) == value
    for value in (down(low), up(high)):
        dead = refused(NATIVE, {**base, field: value}, DeadLetterCode.OUT_OF_BOUNDS)
        assert field in dead.reason


def test_the_shipped_measurement_bounds_are_the_documented_ones():
    # Loosening a default is a decision for the README, not a side effect: this pins them.
    assert (V.min_power_w, V.max_power_w) == (-100_000.0, 100_000.0)
    assert V.max_energy_wh == 1e10
    assert (V.min_voltage_v, V.max_voltage_v) == (0.0, 1_500.0)
    assert (V.min_current_a, V.max_current_a) == (-1_000.0, 1_000.0)
    assert (V.max_payload_bytes, V.max_json_depth, V.max_topic_chars, V.max_id_chars) == (
        65_536, 32, 512, 128)
    assert V.min_ts == datetime(2000, 1, 1, tzinfo=timezone.utc) and V.max_future_s == 300.0


def test_negative_zero_and_the_largest_exact_integers_are_numbers_like_any_other():
    assert accepted(NATIVE, b'{"power_w": -0}').power_w == 0.0
    assert accepted(NATIVE, b'{"power_w": -0.0}').power_w == 0.0
    assert accepted(NATIVE, b'{"power_w": 100000}').power_w == 100_000.0
    # The largest 64-bit integers parse exactly, then fail the bound, not the parser.
    refused(NATIVE, b'{"power_w": 18446744073709551615}', DeadLetterCode.OUT_OF_BOUNDS)
    refused(NATIVE, b'{"power_w": -9223372036854775809}', DeadLetterCode.OUT_OF_BOUNDS)


def test_a_counter_that_overflows_when_converted_from_kwh_is_not_finite():
    dead = refused(NATIVE, b'{"power_w": 1, "energy_kwh": 1e306}', DeadLetterCode.NOT_FINITE)
    assert "energy_wh" in dead.reason


def test_configured_bounds_are_the_ones_applied():
    tight = replace(V, min_power_w=0.0, max_power_w=10.0)
    assert accepted(NATIVE, {"power_w": 10}, settings=tight).power_w == 10.0
    refused(NATIVE, {"power_w": 10.5}, DeadLetterCode.OUT_OF_BOUNDS, settings=tight)
    refused(NATIVE, {"power_w": -0.5}, DeadLetterCode.OUT_OF_BOUNDS, settings=tight)


# ------------------------------------------------------------------------- time stamps


def test_the_future_bound_is_exact():
    at_limit = NOW + timedelta(seconds=V.max_future_s)
    assert accepted(NATIVE, {"power_w": 1, "ts": at_limit.isoformat()}).ts == at_limit
    past = at_limit + timedelta(microseconds=1)
    dead = refused(NATIVE, {"power_w": 1, "ts": past.isoformat()}, DeadLetterCode.TIMESTAMP_IN_FUTURE)
    assert "in the future" in dead.reason


def test_the_earliest_time_is_exact():
    assert accepted(NATIVE, {"power_w": 1, "ts": "2000-01-01T00:00:00Z"}).ts == V.min_ts
    dead = refused(NATIVE, {"power_w": 1, "ts": "1999-12-31T23:59:59.999999Z"},
                   DeadLetterCode.TIMESTAMP_TOO_OLD)
    assert "2000-01-01" in dead.reason
    # Epoch seconds and milliseconds meet the same bound.
    floor_s = int(V.min_ts.timestamp())
    assert accepted(NATIVE, {"power_w": 1, "ts": floor_s}).ts == V.min_ts
    refused(NATIVE, {"power_w": 1, "ts": floor_s - 1}, DeadLetterCode.TIMESTAMP_TOO_OLD)
    assert accepted(NATIVE, {"power_w": 1, "ts": floor_s * 1000}).ts == V.min_ts
    refused(NATIVE, {"power_w": 1, "ts": floor_s * 1000 - 1}, DeadLetterCode.TIMESTAMP_TOO_OLD)


def test_a_configured_earlier_time_reaches_down_to_the_hard_floor_and_no_further():
    lenient = replace(V, min_ts=TS_FLOOR)
    assert accepted(NATIVE, {"power_w": 1, "ts": "1900-01-01T00:00:00Z"}, settings=lenient).ts == TS_FLOOR
    refused(NATIVE, {"power_w": 1, "ts": "1899-12-31T23:59:59Z"}, DeadLetterCode.TIMESTAMP_TOO_OLD,
            settings=lenient)
    with pytest.raises(ValueError, match="min_ts"):
        ValidationSettings(min_ts=TS_FLOOR - timedelta(seconds=1))
    with pytest.raises(ValueError, match="min_ts"):
        ValidationSettings(min_ts=datetime(2000, 1, 1))  # naive


@pytest.mark.parametrize("ts, code", [
    ("0001-01-01T00:00:00Z", DeadLetterCode.TIMESTAMP_TOO_OLD),
    ("0001-01-01T00:00:00+14:00", DeadLetterCode.TIMESTAMP_TOO_OLD),
    ("0001-01-01T00:00:00-23:59", DeadLetterCode.TIMESTAMP_TOO_OLD),
    ("9999-12-31T23:59:59-14:00", DeadLetterCode.TIMESTAMP_IN_FUTURE),
    ("9999-12-31T23:59:59.999999+23:59", DeadLetterCode.TIMESTAMP_IN_FUTURE),
    ("2999-12-31T23:30:00-01:00", DeadLetterCode.TIMESTAMP_IN_FUTURE),  # year 3000 in UTC
    ("1900-01-01T00:30:00+01:00", DeadLetterCode.TIMESTAMP_TOO_OLD),  # 1899 in UTC
    ("1970-01-01T00:00:00Z", DeadLetterCode.TIMESTAMP_TOO_OLD),  # a clock that never synced
    (0, DeadLetterCode.TIMESTAMP_TOO_OLD),
    (-1, DeadLetterCode.TIMESTAMP_TOO_OLD),
    (-1e300, DeadLetterCode.TIMESTAMP_TOO_OLD),
    (1e300, DeadLetterCode.TIMESTAMP_IN_FUTURE),
    (2**63, DeadLetterCode.TIMESTAMP_IN_FUTURE),
    (-(2**63), DeadLetterCode.TIMESTAMP_TOO_OLD),
    (99_999_999_999, DeadLetterCode.TIMESTAMP_IN_FUTURE),  # seconds, year 5138
    ("x" * 5000, DeadLetterCode.BAD_TIMESTAMP),
    ("2024-13-01T00:00:00Z", DeadLetterCode.BAD_TIMESTAMP),
    (True, DeadLetterCode.BAD_TIMESTAMP),
    ([2024], DeadLetterCode.BAD_TIMESTAMP),
])
def test_extreme_time_stamps_are_refused_without_overflow(ts, code):
    refused(NATIVE, {"power_w": 1, "ts": ts}, code)


def test_a_time_stamp_that_is_not_json_is_not_a_time_stamp():
    refused(NATIVE, b'{"power_w": 1, "ts": 1e400}', DeadLetterCode.INVALID_JSON)
    refused(NATIVE, b'{"power_w": 1, "ts": NaN}', DeadLetterCode.INVALID_JSON)


@pytest.mark.parametrize("topic, body, field", [
    ("zigbee2mqtt/kitchen_plug", {"power": 5, "last_seen": "0001-01-01T00:00:00+01:00"}, "last_seen"),
    ("zigbee2mqtt/kitchen_plug", {"power": 5, "last_seen": 1e300}, "last_seen"),
    ("tele/tasmota_plug/SENSOR", {"Time": "0001-01-01T00:00:00", "ENERGY": {"Power": 5}}, "Time"),
    ("tele/tasmota_plug/SENSOR", {"Time": "9999-12-31T23:59:59", "ENERGY": {"Power": 5}}, "Time"),
    ("shellyplus1pm-test01/events/rpc",
     {"method": "NotifyStatus", "params": {"ts": -1e18, "switch:0": {"apower": 1}}}, "params.ts"),
    ("shems/home-1/plug/ack",
     {"command_id": "c1", "status": "applied", "state": "on", "ts": "0001-01-01T00:00:00Z"}, "ts"),
])
def test_every_decoder_bounds_its_time_stamps(topic, body, field):
    _, out = run(topic, body)
    assert len(out) == 1 and isinstance(out[0], DeadLetter), out
    assert out[0].error in ("timestamp_too_old", "timestamp_in_future") and field in out[0].reason


def test_acks_meet_the_configured_time_bounds_too():
    body = {"command_id": "c1", "status": "applied", "state": "on"}
    assert isinstance(accepted("shems/home-1/plug/ack", {**body, "ts": NOW.isoformat()}), CommandAck)
    refused("shems/home-1/plug/ack", {**body, "ts": "1999-12-31T23:59:59Z"},
            DeadLetterCode.TIMESTAMP_TOO_OLD)
    refused("shems/home-1/plug/ack", {**body, "ts": (NOW + timedelta(hours=1)).isoformat()},
            DeadLetterCode.TIMESTAMP_IN_FUTURE)


# ------------------------------------------------------------------------- ids and topics


@pytest.mark.parametrize("which", ["home", "device"])
def test_ids_are_accepted_up_to_their_length_limit_and_refused_one_past_it(which):
    def topic(n: int) -> str:
        ident = "é" * n  # characters, not bytes, count
        return f"shems/{ident}/plug/reading" if which == "home" else f"shems/h/{ident}/reading"
    reading = accepted(topic(V.max_id_chars), {"power_w": 1})
    assert len(reading.home_id if which == "home" else reading.device_id) == V.max_id_chars
    dead = refused(topic(V.max_id_chars + 1), {"power_w": 1}, DeadLetterCode.BAD_ID)
    assert f"{V.max_id_chars + 1} characters" in dead.reason


@pytest.mark.parametrize("ident", ["", "a\x00b", "a\x1fb", "a\x7fb", "a\u2028b", "a+b", "a#b",
                                   "\ud800", "tab\there"])
def test_ids_with_characters_no_id_may_hold_are_refused(ident):
    refused(f"shems/{ident}/plug/reading", {"power_w": 1}, DeadLetterCode.BAD_ID)
    refused(f"shems/home-1/{ident}/reading", {"power_w": 1}, DeadLetterCode.BAD_ID)


@pytest.mark.parametrize("topic", ["zigbee2mqtt/{}", "tele/{}/SENSOR", "{}/events/rpc",
                                   "{}/status/switch:0", "shems/{}/d/ack"])
def test_vendor_ids_in_topics_meet_the_same_rules(topic):
    refused(topic.format("x" * (V.max_id_chars + 1)), {"power": 1}, DeadLetterCode.BAD_ID)
    refused(topic.format("bad\x00id"), {"power": 1}, DeadLetterCode.BAD_ID)


def test_printable_unicode_and_spaces_are_fine_in_ids():
    reading = accepted("shems/Zuhause Süd/Wärmepumpe 🔥/reading", {"power_w": 1})
    assert (reading.home_id, reading.device_id) == ("Zuhause Süd", "Wärmepumpe 🔥")


def test_ids_from_the_registry_are_checked_like_ids_from_topics(tmp_path):
    path = tmp_path / "registry.toml"
    path.write_text(f'[[device]]\nsource = "zigbee2mqtt"\nvendor_id = "plug"\n'
                    f'home_id = "{"h" * 129}"\ndevice_id = "d"\n')
    refused("zigbee2mqtt/plug", {"power": 5}, DeadLetterCode.BAD_ID, registry=Registry.load(path))


def test_the_topic_length_is_bounded_when_its_ids_are_not_to_blame():
    # A Shelly status topic's last level is free text: only the topic length bounds it.
    prefix = "shellyplus1pm-test01/status/"
    at_limit = prefix + "x" * (V.max_topic_chars - len(prefix))
    assert run(at_limit, {"tC": 21.5})[1] == []  # a component without measurements: nothing to do
    # ... but one that carries power is no component the decoder knows: a dead letter
    refused(at_limit, {"apower": 1}, DeadLetterCode.UNSUPPORTED_MEASUREMENT)
    dead = refused(at_limit + "x", {"apower": 1}, DeadLetterCode.TOO_LARGE)
    assert f"{V.max_topic_chars + 1} characters" in dead.reason


def test_a_ten_thousand_character_home_id_is_a_dead_letter_with_a_bounded_topic():
    dead = refused("shems/" + "h" * 10_000 + "/d/reading", {"power_w": 5}, DeadLetterCode.BAD_ID)
    assert len(dead.topic) <= 513  # DeadLetter keeps a prefix (PostgreSQL must index it)


# ------------------------------------------------------------------------- size and depth


def test_the_payload_size_limit_is_exact():
    body = b'{"power_w": 5}'
    padded = body + b" " * (V.max_payload_bytes - len(body))
    assert len(padded) == V.max_payload_bytes
    assert accepted(NATIVE, padded).power_w == 5.0
    dead = refused(NATIVE, padded + b" ", DeadLetterCode.TOO_LARGE)
    assert dead.payload_bytes == V.max_payload_bytes + 1 and len(dead.payload) <= 4097


def _nested(depth: int) -> bytes:
    """A native payload whose arrays/objects nest ``depth`` levels (the outer object is one)."""
    return b'{"power_w": 5, "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_the_depth_limit_is_exact():
    assert accepted(NATIVE, _nested(V.max_json_depth)).power_w == 5.0
    dead = refused(NATIVE, _nested(V.max_json_depth + 1), DeadLetterCode.TOO_DEEP)
    assert str(V.max_json_depth) in dead.reason
    # Brackets inside strings are not nesting.
    assert accepted(NATIVE, {"power_w": 5, "note": "[" * 1000}).power_w == 5.0


def test_nesting_beyond_the_parsers_own_limit_is_too_deep_not_a_crash():
    refused(NATIVE, b"[" * 60_000, DeadLetterCode.TOO_DEEP)  # under the size limit
    refused(NATIVE, b'{"a":' * 5000 + b"1" + b"}" * 5000, DeadLetterCode.TOO_DEEP)


def test_configured_size_and_depth_are_the_ones_applied():
    small = replace(V, max_payload_bytes=20, max_json_depth=2)
    assert accepted(NATIVE, b'{"power_w":5,"x":[]}', settings=small).power_w == 5.0
    refused(NATIVE, b'{"power_w":5,"x":[] }', DeadLetterCode.TOO_LARGE, settings=small)
    refused(NATIVE, b'{"power_w":5,"x":[[]]}', DeadLetterCode.TOO_DEEP,
            settings=replace(small, max_payload_bytes=100))


# ------------------------------------------------------------------------- what crashed before


@pytest.mark.parametrize("name, topic, payload, code", [
    ("100,000 [", NATIVE, b"[" * 100_000, DeadLetterCode.TOO_LARGE),
    ("400-digit power", NATIVE, b'{"power_w":1' + b"0" * 400 + b"}", DeadLetterCode.INVALID_JSON),
    ("5,000-digit power", NATIVE, b'{"power_w":1' + b"0" * 5000 + b"}", DeadLetterCode.INVALID_JSON),
    ("year 9999, -14:00", NATIVE, b'{"power_w":5,"ts":"9999-12-31T23:59:59-14:00"}',
     DeadLetterCode.TIMESTAMP_IN_FUTURE),
    ("Tasmota Power [null]", "tele/tasmota_plug/SENSOR", b'{"ENERGY":{"Power":[null]}}',
     DeadLetterCode.MISSING_FIELD),
    ("year 1", NATIVE, b'{"power_w":5,"ts":"0001-01-01T00:00:00Z"}', DeadLetterCode.TIMESTAMP_TOO_OLD),
    ("10,000-char home id", "shems/" + "h" * 10_000 + "/d/reading", b'{"power_w":5}',
     DeadLetterCode.BAD_ID),
    ("Zigbee2MQTT last_seen year 1 +01:00", "zigbee2mqtt/kitchen_plug",
     b'{"power":5,"last_seen":"0001-01-01T00:00:00+01:00"}', DeadLetterCode.TIMESTAMP_TOO_OLD),
    ("1e309", NATIVE, b'{"power_w":1e309}', DeadLetterCode.INVALID_JSON),
    ("NaN", NATIVE, b'{"power_w":NaN}', DeadLetterCode.INVALID_JSON),
    ("not UTF-8", NATIVE, b'{"power_w":5,"x":"\xff"}', DeadLetterCode.NOT_UTF8),
    ("lone surrogate escape", NATIVE, b'{"power_w":5,"x":"\\ud800"}', DeadLetterCode.INVALID_JSON),
    ("unknown topic", "a/b/c/d/e", b'{"power_w":5}', DeadLetterCode.UNKNOWN_TOPIC),
    ("unregistered Z2M", "zigbee2mqtt/garage", b'{"power":5}', DeadLetterCode.UNREGISTERED_DEVICE),
    ("Tasmota 9 channels", "tele/tasmota_dual/SENSOR", b'{"ENERGY":{"Power":[1,2,3,4,5,6,7,8,9]}}',
     DeadLetterCode.INVALID_PAYLOAD),
])
def test_inputs_that_crashed_the_flow_are_dead_letters_with_a_code(name, topic, payload, code):
    dead = refused(topic, payload, code)
    assert dead.payload_bytes == len(payload)


def test_a_shelly_channel_that_is_a_digit_but_not_ascii_is_not_a_channel():
    # str.isdigit accepts "²" and int() refuses it: this crashed the flow before.
    # Not a channel, so no component the decoder reads; it carries power: a dead letter, no crash.
    body = '{"method":"NotifyStatus","params":{"switch:\u00b2":{"apower":1}}}'.encode()
    refused("shellyplus1pm-test01/events/rpc", body, DeadLetterCode.UNSUPPORTED_MEASUREMENT)


def test_a_decoder_failure_nobody_foresaw_is_a_dead_letter_named_after_the_exception():
    class BrokenRegistry(Registry):
        def lookup(self, source, vendor_id, channel):
            raise RuntimeError("registry backend gone")

    _, out = run("zigbee2mqtt/kitchen_plug", {"power": 5}, registry=BrokenRegistry([]))
    assert len(out) == 1 and isinstance(out[0], DeadLetter)
    assert (out[0].error, out[0].step) == ("RuntimeError", "decode")
    assert "registry backend gone" in out[0].reason


def test_even_a_message_of_the_wrong_types_is_a_dead_letter_not_an_exception():
    _, out = decode(None, RawMessage("shems/h/d/reading", "{}", NOW), REG, V)  # str, not bytes
    assert len(out) == 1 and isinstance(out[0], DeadLetter) and out[0].error == "TypeError"
    _, out = decode(None, RawMessage(None, None, NOW), REG, V)
    assert len(out) == 1 and isinstance(out[0], DeadLetter) and out[0].topic == "None"


# ------------------------------------------------------------------------- decoder state


def test_a_bad_shelly_frame_is_refused_whole_and_leaves_the_state_as_it_was():
    topic = "shellyplus1pm-test01/events/rpc"
    state, out = run(topic, {"method": "NotifyFullStatus",
                             "params": {"ts": NOW.timestamp(), "switch:0": {"apower": 10, "voltage": 230}}})
    assert [r.power_w for r in out] == [10.0]
    bad = {"method": "NotifyStatus", "params": {"ts": NOW.timestamp(), "switch:0": {"voltage": "high"}}}
    state, out = run(topic, bad, state=state)
    assert [d.error for d in out] == ["invalid_payload"]
    state, out = run(topic, {"method": "NotifyStatus",
                             "params": {"ts": NOW.timestamp(), "switch:0": {"apower": 12}}}, state=state)
    assert [(r.power_w, r.voltage_v) for r in out] == [(12.0, 230.0)]


def test_shelly_state_keeps_only_measured_components_and_fields():
    params = {"ts": NOW.timestamp(), "switch:0": {"apower": 1, "junk": "x" * 10_000,
                                                  "aenergy": {"total": 2, "by_minute": [1] * 1000}}}
    params.update({f"input:{i}": {"state": True} for i in range(500)})
    params.update({f"switch:{i}": {"apower": 1} for i in range(300, 800)})  # past any channel
    state, _ = run("shellyplus1pm-test01/events/rpc", {"method": "NotifyStatus", "params": params})
    assert state.shelly.components == {"switch:0": {"apower": 1, "aenergy": {"total": 2}}}


# ------------------------------------------------------------------------- codes


def test_every_code_is_snake_case_with_a_message():
    assert set(MESSAGES) == set(DeadLetterCode)
    for code in DeadLetterCode:
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", code.value) and code.message


def test_validate_keeps_its_sentence_interface_for_other_callers():
    good = Reading("h", "d", NOW, 5.0)
    assert validate(good, NOW, V) is None
    assert "outside the bounds" in validate(replace(good, power_w=1e9), NOW, V)
    assert "not a finite number" in validate(replace(good, power_w=math.nan), NOW, V)
    assert "no time zone" in validate(replace(good, ts=NOW.replace(tzinfo=None)), NOW, V)


def test_the_hard_time_range_leaves_room_for_any_arithmetic():
    # A year of history and a day of offset on either side still fit in datetime.
    assert TS_FLOOR - timedelta(days=400) > datetime.min.replace(tzinfo=timezone.utc)
    assert TS_CEILING + timedelta(days=400) < datetime.max.replace(tzinfo=timezone.utc)


def test_decoder_state_survives_a_snapshot():
    import pickle

    state, _ = run("shellyplus1pm-test01/status/switch:0", {"apower": 3, "aenergy": {"total": 1}})
    assert isinstance(pickle.loads(pickle.dumps(state)), DecoderState)
