"""Generated hostile input at every decoder and on through the operators into a real SQLite store.

What is asserted for every generated message: ``decode`` returns (never raises); each output is a
reading, a dead letter or an acknowledgement; a dead letter's ``error`` is one of the reason codes
(an exception class name there would be a decoder bug that the catch-all hid); every reading
satisfies the configured bounds. Then the readings go through the windower, the home aggregator
and the per-home insights (as flows/logic.py drives them, closing and flushing at the end) and
every record lands in SQLite, none of which may raise.

``make test`` runs a bounded number of examples (profile ``fuzz``, 1,810, about 17 s on a busy
machine); ``HYPOTHESIS_PROFILE=long`` runs many more (see tests/bench/README.md).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flows.ingest import meter_homes
from pipeline.energy.tariff import book_from_toml
from pipeline.ingest.decode import DecoderState, decode, route_key
from pipeline.ingest.home_total import HomeAggregator
from pipeline.ingest.registry import Registry
from pipeline.ingest.validation import check_reading, check_ts
from pipeline.ingest.windowing import DeviceWindower
from pipeline.insights.step import HomeForecasts, HomeInsights, run_both
from pipeline.reasons import DeadLetterCode
from pipeline.records import CommandAck, DeadLetter, LateReading, RawMessage, Reading
from pipeline.settings import ValidationSettings, WindowSettings
from sinks.base import Batch
from sinks.stores import open_store
from tests.conftest import FIXTURES

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
            HealthCheck.filter_too_much]
settings.register_profile("fuzz", max_examples=120, deadline=None, suppress_health_check=_SLOW_OK,
                          print_blob=True)
settings.register_profile("long", max_examples=5_000, deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
# Selected here rather than loaded globally, so other tests' Hypothesis settings stay their own.
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"))


def scaled(n: int) -> settings:
    """The profile with ``n`` examples in the bounded run (the long run keeps its own count)."""
    if os.environ.get("HYPOTHESIS_PROFILE", "fuzz") == "fuzz":
        return settings(PROFILE, max_examples=n)
    return PROFILE


REG = Registry.load(FIXTURES / "registry.toml")
METER_HOMES = meter_homes(REG)
V = ValidationSettings()
W = WindowSettings()
BOOK = book_from_toml(FIXTURES.parent.parent / "pipeline" / "data" / "demo_tariffs.toml")
NOW = datetime(2024, 2, 1, 8, 16, tzinfo=timezone.utc)
CODES = {c.value for c in DeadLetterCode}
SEED_TOPICS = {
    "shelly_switch_status": "shellyplus1pm-test01/status/switch:0",
    "shelly_notifystatus_switch": "shellyplus1pm-test01/events/rpc",
    "shelly_notifystatus_em": "shellypro3em-test02/events/rpc",
    "shelly_notifystatus_sys": "shellyplus1pm-test01/events/rpc",
    "tasmota_sensor_single": "tele/tasmota_plug/SENSOR",
    "tasmota_sensor_dual": "tele/tasmota_dual/SENSOR",
    "zigbee2mqtt_plug": "zigbee2mqtt/kitchen_plug",
}
SEEDS = [FIXTURES / "payloads" / f"{name}.json" for name in sorted(SEED_TOPICS)]
# The device formats of issue 12, with their own registry (changed topic layouts, Gen1, cover).
DEVICES = Registry.load(FIXTURES / "registry_devices.toml")
DEVICE_SEED_TOPICS = {
    "shelly_proem50_notifyfullstatus": "shellyproem50-test03/events/rpc",
    "shelly_proem50_notifystatus_em1data": "shellyproem50-test03/events/rpc",
    "shelly_2pm_cover_status": "shelly2pmg3-test04/status/cover:0",
    "zigbee2mqtt_plug": "zigbee2mqtt/ground floor/kitchen plug",
    "tasmota_sensor_single": "plug2/tele/SENSOR",
}


# ------------------------------------------------------------------------- JSON with raw tokens


class Raw(str):
    """A token written into the JSON text as is: numbers no serializer would produce."""


def render(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # inf, nan: not JSON, on purpose
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{render(v)}"
                          for k, v in value.items()) + "}"


def to_bytes(value) -> bytes:
    return render(value).encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8


_ODD_NUMBERS = {
    "1e309": "1e309", "-1e309": "-1e309", "NaN": "NaN", "Infinity": "Infinity",
    "-Infinity": "-Infinity", "-0": "-0", "-0.0": "-0.0", "1e-400": "1e-400", "0.0": "0.0",
    "u64 max": "18446744073709551615", "u64 max + 1": "18446744073709551616",
    "i64 min - 1": "-9223372036854775809", "401 digits": "1" + "0" * 400, "5000 digits": "9" * 5000,
    "1E+2": "1E+2", "00": "00", "01": "01", "1.": "1.", ".5": ".5", "+1": "+1", "1e": "1e",
    "--1": "--1", "0x10": "0x10", "1_000": "1_000",
}
# Drawn by name, so Hypothesis's reports show the name rather than 5,000 digits.
odd_numbers = st.sampled_from(sorted(_ODD_NUMBERS)).map(lambda name: Raw(_ODD_NUMBERS[name]))
plausible_numbers = st.one_of(
    st.floats(min_value=-150_000, max_value=150_000, allow_nan=False),
    st.integers(min_value=-200_000, max_value=200_000),
    st.sampled_from([0, -0.0, 100_000, -100_000, 100_000.0000001, 1e10, 1500, 1000, -1000]),
)
numbers = st.one_of(plausible_numbers, plausible_numbers, odd_numbers,
                    st.floats(), st.integers(min_value=-(2**80), max_value=2**80))
texts = st.one_of(st.text(max_size=30), st.text(max_size=30),
                  st.sampled_from(["", "\x00", "\ud800", "NaN", "1e309"]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
field_values = st.one_of(plausible_numbers, plausible_numbers, plausible_numbers, numbers,
                         scalars, trees)

_near = st.datetimes(min_value=datetime(2024, 1, 29), max_value=datetime(2024, 2, 1, 8, 25),
                     timezones=st.just(timezone.utc))
_offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                         max_value=timedelta(hours=23, minutes=59)).map(timezone)
_anywhen = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                        timezones=st.none() | st.just(timezone.utc) | _offsets)
timestamps = st.one_of(
    _near.map(lambda d: d.isoformat()),
    _near.map(lambda d: d.timestamp()),
    _near.map(lambda d: int(d.timestamp() * 1000)),
    _anywhen.map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "2000-01-01T00:00:00Z",
                     "1999-12-31T23:59:59.999999Z", "2999-12-31T23:30:00-01:00", "", "now",
                     "2024-02-30T00:00:00", "1970-01-01T00:00:00"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    odd_numbers,
    scalars,
)
naive_local = st.one_of(
    st.datetimes(min_value=datetime(2024, 1, 29), max_value=datetime(2024, 2, 1, 8, 20)).map(
        lambda d: d.isoformat()),
    timestamps,
)


def maybe(d: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=d)


# ------------------------------------------------------------------------- ids and topics

odd_ids = st.sampled_from(["", "a/b", "a+b", "#", "\x00", "nul\x00", "\ud800", " ", "tab\t",
                           "h" * 129, "h" * 10_000, "é" * 128, "🔥", "\u2028", "DROP TABLE x;"])


def ids(known: list[str]) -> st.SearchStrategy[str]:
    """Mostly ids that get a message past the id checks (and the registry), so the values in
    the payload are what is tested; sometimes anything at all."""
    return st.one_of(*[st.sampled_from(known)] * 18, st.text(max_size=20), odd_ids)


native_body = st.fixed_dictionaries({"power_w": field_values}, optional={
    "ts": timestamps, "energy_wh": field_values, "energy_kwh": field_values,
    "voltage_v": field_values, "current_a": field_values,
    "kind": st.one_of(st.sampled_from(["meter", "appliance", "pv", "battery", "ev"]), scalars),
})
plausible_native_body = st.fixed_dictionaries({"power_w": plausible_numbers}, optional={
    "energy_wh": st.floats(min_value=0, max_value=1e10), "voltage_v": st.floats(0, 1500),
    "current_a": st.floats(-1000, 1000), "kind": st.sampled_from(["meter", "appliance", "pv"])})
ack_body = maybe({
    "command_id": st.one_of(st.text(min_size=1, max_size=70), scalars),
    "status": st.one_of(st.sampled_from(["applied", "scheduled", "rejected"]), scalars),
    "state": st.one_of(st.sampled_from(["on", "off"]), scalars),
    "ts": timestamps, "message": st.one_of(st.text(max_size=600), scalars),
})
shelly_fields = st.dictionaries(
    st.sampled_from(["apower", "act_power", "total_act_power", "voltage", "current", "a_voltage",
                     "a_current", "total_act", "id", "output", "junk"]),
    field_values, max_size=6,
).flatmap(lambda d: st.one_of(st.just(d), st.fixed_dictionaries(
    {**{k: st.just(v) for k, v in d.items()},
     "aenergy": st.one_of(maybe({"total": field_values, "by_minute": trees}), scalars)})))
shelly_components = st.sampled_from(["switch:0", "switch:1", "pm1:0", "em:0", "emdata:0", "em1:0",
                                     "em1data:0", "sys", "input:0", "switch:\u00b2", "switch:999",
                                     "switch:", "switch:-1", "em:0:1"])
shelly_rpc_body = maybe({
    "method": st.one_of(st.sampled_from(["NotifyStatus", "NotifyFullStatus", "NotifyEvent"]),
                        scalars),
    "params": st.one_of(
        st.dictionaries(shelly_components, st.one_of(shelly_fields, shelly_fields, scalars),
                        max_size=4).flatmap(
            lambda d: st.fixed_dictionaries({k: st.just(v) for k, v in d.items()},
                                            optional={"ts": timestamps})),
        scalars),
    "src": texts,
})
tasmota_channel_values = st.one_of(field_values, st.lists(field_values, max_size=10))
tasmota_body = maybe({
    "Time": naive_local,
    "ENERGY": st.one_of(maybe({"Power": tasmota_channel_values, "Total": tasmota_channel_values,
                               "Voltage": tasmota_channel_values,
                               "Current": tasmota_channel_values}), scalars),
})
z2m_body = maybe({"power": field_values, "energy": field_values, "voltage": field_values,
                  "current": field_values, "last_seen": timestamps, "state": texts})

shelly_ids = ids(["shellyplus1pm-test01", "shellypro3em-test02", "shellyplus1pm-nobody"])


@st.composite
def messages(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["native", "ack", "rpc", "status", "tasmota", "z2m", "seed",
                                 "tree", "bytes", "deep"]))
    homes = ids(["home-a", "home-b", "home-1"])
    devices = ids(["plug", "boiler", "roof"])
    if kind == "native":
        return f"shems/{draw(homes)}/{draw(devices)}/reading", to_bytes(draw(native_body))
    if kind == "ack":
        return f"shems/{draw(homes)}/{draw(devices)}/ack", to_bytes(draw(ack_body))
    if kind == "rpc":
        return f"{draw(shelly_ids)}/events/rpc", to_bytes(draw(shelly_rpc_body))
    if kind == "status":
        topic = f"{draw(shelly_ids)}/status/{draw(shelly_components)}"
        return topic, to_bytes(draw(st.one_of(shelly_fields, scalars)))
    if kind == "tasmota":
        return f"tele/{draw(ids(['tasmota_plug', 'tasmota_dual', 'ghost']))}/SENSOR", to_bytes(
            draw(tasmota_body))
    if kind == "z2m":
        return f"zigbee2mqtt/{draw(ids(['kitchen_plug', 'garage', 'bridge']))}", to_bytes(
            draw(z2m_body))
    if kind == "seed":
        return draw(mutated_seeds())
    topic = draw(st.one_of(
        st.sampled_from(sorted(SEED_TOPICS.values()) + ["shems/home-1/plug/reading",
                                                       "shems/home-1/plug/ack"]),
        st.text(max_size=60)))
    if kind == "tree":
        return topic, to_bytes(draw(trees))
    if kind == "bytes":
        return topic, draw(st.binary(max_size=300))
    depth = draw(st.sampled_from([31, 32, 33, 100, 1023, 1024, 1025, 60_000, 100_000]))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'{"power_w":1,"x":[']))
    closer = {b"[": b"]", b'{"a":': b"}", b'{"power_w":1,"x":[': b"]"}[opener]
    tail = draw(st.sampled_from([b"", closer * depth, b"1" + closer * depth]))
    return topic, opener * depth + tail


@st.composite
def good_messages(draw) -> tuple[str, bytes]:
    """Messages that should become readings (real-format seeds, plausible native readings near
    the time of receipt), so the operators get enough of them to window, total and learn."""
    if draw(st.booleans()):
        seed = draw(st.sampled_from(SEEDS))
        return SEED_TOPICS[seed.stem], seed.read_bytes()
    body = draw(plausible_native_body)
    body["ts"] = draw(_near.map(lambda d: d.isoformat()))
    home, device = draw(st.sampled_from(["home-1", "home-a", "home-b"])), draw(
        st.sampled_from(["plug", "mains", "roof"]))
    return f"shems/{home}/{device}/reading", to_bytes(body)


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def _replace_leaf(draw, body, paths: list) -> None:
    """One of ``paths`` (from _leaves) in ``body`` given a generated value (none for a bare scalar)."""
    path = paths[draw(st.integers(min_value=0, max_value=len(paths) - 1))]
    target = body
    for key in path[:-1]:
        target = target[key]
    if path:
        target[path[-1]] = draw(st.one_of(field_values, timestamps))


@st.composite
def mutated_seeds(draw) -> tuple[str, bytes]:
    """A real-format vendor payload with one to three leaves replaced by generated values."""
    seed = draw(st.sampled_from(SEEDS))
    body = json.loads(seed.read_text())
    paths = list(_leaves(body))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        _replace_leaf(draw, body, paths)
    return SEED_TOPICS[seed.stem], to_bytes(body)


# ------------------------------------------------------------------------- the checks


def decode_all(msgs: list[tuple[str, bytes, datetime]], *, count: bool = True,
               registry: Registry = REG) -> list[Reading | DeadLetter | CommandAck]:
    """Decode as the flow does: decoder state per route key, snapshotted between messages."""
    states: dict[str, DecoderState | None] = {}
    out = []
    for topic, payload, received_at in msgs:
        key = route_key(topic, registry) or "unroutable"
        state, results = decode(states.get(key), RawMessage(topic, payload, received_at), registry, V)
        states[key] = pickle.loads(pickle.dumps(state))  # Bytewax snapshots it
        for item in results:
            assert isinstance(item, (Reading, DeadLetter, CommandAck)), item
            # Shown by --hypothesis-show-statistics: how much of the input got how far.
            if count:
                event(f"dead letter: {item.error}" if isinstance(item, DeadLetter)
                      else type(item).__name__)
            if isinstance(item, DeadLetter):
                assert item.error in CODES, (item.error, item.reason)  # not a caught exception
                assert item.step == "decode" and item.reason
                assert len(item.topic) <= 513 and len(item.payload) <= 4097
                for text in (item.topic, item.reason):  # storable in any store, as UTF-8 text
                    assert "\x00" not in text
                    text.encode("utf-8")  # raises on a lone surrogate
            elif isinstance(item, Reading):
                assert check_reading(item, received_at, V) is None, item
                assert V.min_ts <= item.ts <= received_at + timedelta(seconds=V.max_future_s)
                assert all(v is None or math.isfinite(v) for v in
                           (item.power_w, item.energy_wh, item.voltage_v, item.current_a))
            else:
                assert check_ts(item.ts, received_at, V) is None, item
                assert item.command_id.isprintable() and item.message.isprintable()
            out.append(item)
    return out


def run_operators(items: list, now: datetime) -> Batch:
    """The pure operators as flows/logic.py drives them, closing and flushing at the end."""
    batch = Batch()
    windowers: dict[tuple[str, str], DeviceWindower] = {}
    for item in items:
        if isinstance(item, Reading):
            batch.readings.append(item)
            windower = windowers.setdefault((item.home_id, item.device_id), DeviceWindower(W))
            out = windower.add(item, now)
            batch.device_windows.extend(out.windows)
            batch.late_readings.extend(
                _late(r, W.window_s) for r in out.late)
        elif isinstance(item, DeadLetter):
            batch.dead_letters.append(item)
        else:
            batch.command_acks.append(item)
    later = now + timedelta(seconds=W.idle_close_s + 1)
    for windower in windowers.values():
        batch.device_windows.extend(windower.close_due(later).windows)
        batch.device_windows.extend(windower.flush().windows)
        pickle.loads(pickle.dumps(windower))
    aggregators: dict[str, HomeAggregator] = {}
    for window in sorted(batch.device_windows, key=lambda w: w.bucket):
        agg = aggregators.setdefault(window.home_id, HomeAggregator(
            W, known_meter=window.home_id in METER_HOMES))
        batch.home_windows.extend(agg.add(window, now).windows)
    for agg in aggregators.values():
        batch.home_windows.extend(agg.close_due(later + timedelta(hours=1)).windows)
        batch.home_windows.extend(agg.flush().windows)
    insights: dict[str, HomeInsights] = {}
    forecasts: dict[str, HomeForecasts | None] = {}
    for window in sorted(batch.device_windows + batch.home_windows, key=lambda w: w.bucket):
        home = insights.setdefault(window.home_id, HomeInsights(
            window.home_id, REG.home_timezone(window.home_id, "UTC")))
        found, forecasts[window.home_id] = run_both(home, forecasts.get(window.home_id), window, BOOK, now)
        for item in found:
            _collect(batch, item)
    for home in insights.values():
        for found in home.check(later + timedelta(days=1)):
            _collect(batch, found)
        pickle.loads(pickle.dumps(home))
    for state in forecasts.values():
        pickle.loads(pickle.dumps(state))
    return batch


def _late(reading: Reading, size: int) -> LateReading:
    """As DeviceWindowLogic marks a reading that came after its window closed."""
    epoch = int(reading.ts.timestamp()) // size * size
    return LateReading(reading, datetime.fromtimestamp(epoch, timezone.utc))


def _collect(batch: Batch, found) -> None:
    name = type(found).__name__
    {"Forecast": batch.forecasts, "ForecastScore": batch.forecast_scores,
     "Anomaly": batch.anomalies, "Recommendation": batch.recommendations}[name].append(found)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db")
    s.migrate()
    s.upsert_devices(REG.device_infos())
    yield s
    s.close()


# ------------------------------------------------------------------------- the tests


@scaled(1500)
@given(msg=messages(), skew=st.floats(min_value=-3600, max_value=3600))
def test_any_single_message_decodes_to_readings_or_dead_letters(msg, skew):
    topic, payload = msg
    decode_all([(topic, payload, NOW + timedelta(seconds=skew))])


@scaled(250)
@given(msgs=st.lists(st.tuples(st.one_of(messages(), good_messages()),
                               st.floats(min_value=0, max_value=600)), min_size=1, max_size=25))
def test_message_streams_go_through_the_operators_into_the_store(store, msgs):
    stream, wall = [], NOW
    for (topic, payload), gap in msgs:
        wall += timedelta(seconds=gap)
        stream.append((topic, payload, wall))
    items = decode_all(stream)
    batch = run_operators(items, wall)
    event(f"device windows: {min(len(batch.device_windows), 3)}+")
    event(f"home windows: {min(len(batch.home_windows), 3)}+")
    store.write(batch)


@scaled(60)
@given(bodies=st.lists(plausible_native_body, min_size=1, max_size=40),
       home=st.sampled_from(["home-1", "home-b"]),
       devices=st.lists(st.sampled_from(["plug", "mains", "roof"]), min_size=1, max_size=40))
def test_a_home_whose_readings_span_the_accepted_time_range_is_windowed_and_stored(
        store, bodies, home, devices):
    """Readings at the accepted extremes (the earliest time, the future bound) mixed with recent
    ones: the minute a year-1 reading crashed on closing must now close without error."""
    stream = []
    for i, body in enumerate(bodies):
        body = dict(body)
        body.setdefault("ts", ["2000-01-01T00:00:00Z", (NOW + timedelta(seconds=V.max_future_s)
                                                        ).isoformat(), None][i % 3])
        stream.append((f"shems/{home}/{devices[i % len(devices)]}/reading", to_bytes(body), NOW))
    batch = run_operators(decode_all(stream), NOW)
    store.write(batch)


def test_the_fuzzed_store_holds_what_was_written(store):
    """The module's store is real: the dead letters and readings the fuzz wrote are readable."""
    topic = "shems/home-1/not-fuzzed/reading"  # a device the fuzz never generates
    items = decode_all([(topic, b'{"power_w": 5}', NOW), (topic, b"[" * 60_000, NOW)], count=False)
    store.write(run_operators(items, NOW))
    assert any(d.error == "too_deep" and d.topic == topic for d in store.dead_letters())
    assert [(r.device_id, r.power_w) for r in store.readings("home-1")
            if r.device_id == "not-fuzzed"] == [("not-fuzzed", 5.0)]


# ------------------------------------------------------------------------- issue 12's device formats

gen1_topics = st.builds(
    lambda device, group, index, field: f"shellies/{device}/{group}/{index}/{field}",
    ids(["shellyplug-s-040BAD", "shellyem3-C45BBE7928B9", "shellyplug-s-nobody"]),
    st.sampled_from(["relay", "emeter"]),
    st.one_of(st.sampled_from(["0", "1", "2", "7"]), st.text(max_size=4)),
    st.one_of(st.sampled_from(["power", "energy", "total", "voltage", "current", "returned_energy",
                               "total_returned", "pf", "reactive_power"]), st.text(max_size=12)),
)
gen1_payloads = st.one_of(field_values.map(to_bytes), st.sampled_from([b"on", b"", b"85.31", b"-1"]),
                          st.binary(max_size=20))
z2m_names = st.one_of(st.sampled_from(["ground floor/kitchen plug", "washer plug", "upstairs/dryer",
                                       "bridge", "bridge/state", ""]), st.text(max_size=30))
z2m_topics = st.builds(lambda base, name, suffix: f"{base}/{name}{suffix}",
                       st.sampled_from(["zigbee2mqtt", "home/z2m", "home"]), z2m_names,
                       st.one_of(st.just(""), st.sampled_from(["/power", "/availability", "/set",
                                                              "/get", "/energy"]),
                                 st.text(max_size=10).map(lambda t: "/" + t)))
new_shelly_components = st.sampled_from(["em1:0", "em1:1", "em1data:0", "em1data:1", "cover:0",
                                         "light:0", "rgbw:0", "foo:0", "sys", "wifi", "mqtt",
                                         "input:0", "switch:0"])
new_shelly_fields = st.dictionaries(
    st.sampled_from(["apower", "act_power", "total_act_energy", "total_act_ret_energy", "voltage",
                     "current", "current_pos", "state", "tC", "rssi", "junk_power"]),
    field_values, max_size=5)


@st.composite
def device_messages(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["gen1", "z2m", "tasmota", "rpc", "status", "seed"]))
    if kind == "gen1":
        return draw(gen1_topics), draw(gen1_payloads)
    if kind == "z2m":
        return draw(z2m_topics), to_bytes(draw(st.one_of(z2m_body, scalars)))
    if kind == "tasmota":
        topic = draw(st.sampled_from(["plug2/tele/SENSOR", "telemetry/garage_plug/SENSOR",
                                      "house/tasmota-tele/heater/SENSOR", "plug2/tele/STATE"]))
        return topic, to_bytes(draw(tasmota_body))
    shelly = draw(ids(["shellyproem50-test03", "shelly2pmg3-test04"]))
    if kind == "rpc":
        params = draw(st.dictionaries(new_shelly_components, st.one_of(new_shelly_fields, scalars),
                                      max_size=4))
        params["ts"] = draw(timestamps)
        method = draw(st.sampled_from(["NotifyStatus", "NotifyFullStatus"]))
        return f"{shelly}/events/rpc", to_bytes({"method": method, "params": params})
    if kind == "status":
        return (f"{shelly}/status/{draw(new_shelly_components)}",
                to_bytes(draw(st.one_of(new_shelly_fields, scalars))))
    name = draw(st.sampled_from(sorted(DEVICE_SEED_TOPICS)))
    body = json.loads((FIXTURES / "payloads" / f"{name}.json").read_text())
    _replace_leaf(draw, body, list(_leaves(body)))
    return DEVICE_SEED_TOPICS[name], to_bytes(body)


@scaled(600)
@given(msgs=st.lists(device_messages(), min_size=1, max_size=6),
       skew=st.floats(min_value=-3600, max_value=3600))
def test_the_new_device_formats_decode_to_readings_or_dead_letters(msgs, skew):
    """Gen1 values, changed Tasmota and Zigbee2MQTT layouts, em1data, cover and unknown
    components: never an exception, every reading within bounds (decode_all's checks), and the
    stream's Gen1 state survives a snapshot between messages."""
    when = NOW + timedelta(seconds=skew)
    decode_all([(topic, payload, when) for topic, payload in msgs], registry=DEVICES)


@scaled(200)
@given(fields=st.dictionaries(st.one_of(st.sampled_from(["apower", "total_act_energy", "tC", "rssi",
                                                         "junk_power", "state"]), st.text(max_size=8)),
                              plausible_numbers, max_size=4),
       component=st.text(min_size=1, max_size=12).filter(
           lambda c: c != "ts" and c.partition(":")[0] not in {
               "switch", "pm1", "cover", "light", "rgb", "rgbw", "em", "em1", "emdata", "em1data"}))
def test_an_unknown_shelly_component_with_power_or_energy_is_never_silent(fields, component):
    body = {"method": "NotifyStatus", "params": {"ts": NOW.timestamp(), component: fields}}
    raw = json.dumps(body).encode()  # valid JSON: what is tested is the component, not the parse
    out = decode_all([("shelly2pmg3-test04/events/rpc", raw, NOW)], registry=DEVICES, count=False)
    metering = any("power" in k or "energy" in k for k in fields)
    assert [x.error for x in out if isinstance(x, DeadLetter)] == (
        ["unsupported_measurement"] if metering else []), (component, fields, out)
