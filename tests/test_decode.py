"""Decoders against vendor-documented payloads, and every way a payload can be bad."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.ingest.decode import DecoderState, decode, route_key, subscriptions
from pipeline.ingest.decode.topics import matches, route
from pipeline.ingest.registry import Registry, RegistryEntry
from pipeline.records import DeadLetter, DeviceKind, RawMessage, Reading, Source
from pipeline.settings import ValidationSettings
from tests.conftest import FIXTURES

REG = Registry.load(FIXTURES / "registry.toml")
V = ValidationSettings()
NOW = datetime(2024, 2, 1, 8, 16, tzinfo=timezone.utc)


def payload(name: str) -> bytes:
    return (FIXTURES / "payloads" / name).read_bytes()


def run(topic: str, body, state=None, now=NOW, registry=REG):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode(state, RawMessage(topic, raw, now), registry, V)


def one_reading(results) -> Reading:
    assert len(results) == 1 and isinstance(results[0], Reading), results
    return results[0]


def one_dead(results) -> DeadLetter:
    assert len(results) == 1 and isinstance(results[0], DeadLetter), results
    return results[0]


def test_route_keys_group_one_physical_device():
    assert route_key("shems/h/d/reading") == "native/h/d"
    assert route_key("shellyplus1pm-x/events/rpc") == route_key("shellyplus1pm-x/status/switch:0") == "shelly/shellyplus1pm-x"
    assert route_key("tele/plug/SENSOR") == "tasmota/plug"
    assert route_key("zigbee2mqtt/kitchen") == "zigbee2mqtt/kitchen"
    assert route_key("random/topic") is None


@pytest.mark.parametrize("ts, expected", [
    ("2024-02-01T08:15:00Z", datetime(2024, 2, 1, 8, 15, tzinfo=timezone.utc)),
    ("2024-02-01T09:15:00+01:00", datetime(2024, 2, 1, 8, 15, tzinfo=timezone.utc)),
    ("2024-02-01T08:15:00", datetime(2024, 2, 1, 8, 15, tzinfo=timezone.utc)),  # naive = UTC
    (1706775300, datetime(2024, 2, 1, 8, 15, tzinfo=timezone.utc)),  # epoch seconds
    (1706775300500, datetime(2024, 2, 1, 8, 15, 0, 500000, tzinfo=timezone.utc)),  # epoch ms
    (None, NOW),  # missing: time of receipt
])
def test_native_timestamps(ts, expected):
    body = {"power_w": -1200.5, "energy_wh": 10.0, "kind": "pv"}
    if ts is not None:
        body["ts"] = ts
    _, results = run("shems/home-1/roof/reading", body)
    r = one_reading(results)
    assert (r.ts, r.power_w, r.energy_wh, r.kind, r.source) == (expected, -1200.5, 10.0, DeviceKind.PV, Source.NATIVE)


def test_native_energy_in_kwh_is_normalised():
    _, results = run("shems/h/d/reading", {"power_w": 5, "energy_kwh": 1.5})
    assert one_reading(results).energy_wh == 1500.0


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"ts": 1}', "missing field power_w"),
    (b'{"power_w": "abc"}', "power_w must be a number, got 'abc'"),
    (b'{"power_w": true}', "power_w must be a number"),
    # NaN and Infinity are not JSON (RFC 8259), and orjson refuses them as such.
    (b'{"power_w": NaN}', "NaN and Infinity are not JSON"),
    (b'{"power_w": 1, "energy_wh": Infinity}', "NaN and Infinity are not JSON"),
    (b'{"power_w": 1, "energy_kwh": 1e306}', "energy_wh is not a finite number"),
    (b'{"power_w": 1e9}', "outside the bounds"),
    (b'{"power_w": 1, "energy_wh": -5}', "negative"),
    (b'{"power_w": 1, "ts": "yesterday"}', "not ISO 8601"),
    (b'{"power_w": 1, "ts": "2031-01-01T00:00:00Z"}', "in the future"),
    (b'{"power_w": 1, "kind": "toaster"}', "kind 'toaster' is not one of"),
])
def test_malformed_native_payloads_become_dead_letters_with_reasons(body, reason):
    _, results = run("shems/h/d/reading", body)
    dead = one_dead(results)
    assert reason in dead.reason
    assert dead.topic == "shems/h/d/reading" and dead.received_at == NOW
    assert dead.payload == body.decode("utf-8", "replace")


def test_unknown_topic_is_dead_lettered():
    assert "no decoder" in one_dead(run("some/other/topic", {"power_w": 1})[1]).reason


def test_shelly_status_frame_then_partial_notifystatus_merges_onto_it():
    state, results = run("shellyplus1pm-test01/status/switch:0", payload("shelly_switch_status.json"))
    first = one_reading(results)
    assert (first.home_id, first.device_id, first.power_w, first.energy_wh, first.voltage_v, first.current_a) == (
        "home-a", "boiler", 8.9, 6.532, 237.5, 0.068)
    assert first.ts == NOW  # status frames carry no time stamp
    state, results = run("shellyplus1pm-test01/events/rpc", payload("shelly_notifystatus_switch.json"), state)
    merged = one_reading(results)
    assert merged.power_w == 1523.4  # what changed
    assert (merged.voltage_v, merged.energy_wh, merged.current_a) == (237.5, 6.532, 0.068)  # what did not
    assert merged.ts == datetime.fromtimestamp(1654511980.12, timezone.utc)
    assert merged.source == Source.SHELLY
    state = pickle.loads(pickle.dumps(state))  # Bytewax snapshots it
    assert isinstance(state, DecoderState)


def test_shelly_notifystatus_before_any_full_status_uses_what_it_has():
    _, results = run("shellyplus1pm-test01/events/rpc", payload("shelly_notifystatus_switch.json"))
    r = one_reading(results)
    assert r.power_w == 1523.4 and r.energy_wh is None and r.voltage_v is None


def test_shelly_em_meter_with_emdata_energy():
    _, results = run("shellypro3em-test02/events/rpc", payload("shelly_notifystatus_em.json"))
    r = one_reading(results)
    assert (r.home_id, r.device_id, r.kind, r.power_w, r.energy_wh, r.voltage_v) == (
        "home-b", "mains", DeviceKind.METER, 730.9, 1750.5, 236.1)


def test_shelly_notification_without_measurements_is_not_an_error():
    _, results = run("shellyplus1pm-test01/events/rpc", payload("shelly_notifystatus_sys.json"))
    assert results == []
    _, results = run("shellyplus1pm-test01/events/rpc", {"method": "NotifyEvent", "params": {"ts": 1, "events": []}})
    assert results == []


def test_unregistered_shelly_is_dead_lettered():
    body = json.loads(payload("shelly_notifystatus_switch.json"))
    dead = one_dead(run("shellyplus1pm-nobody/events/rpc", body)[1])
    assert "unregistered shelly device shellyplus1pm-nobody channel 0" in dead.reason


def test_tasmota_local_time_is_converted_with_the_registry_time_zone_across_dst():
    _, results = run("tele/tasmota_plug/SENSOR", payload("tasmota_sensor_single.json"),
                     now=datetime(2021, 3, 28, 2, 0, tzinfo=timezone.utc))
    r = one_reading(results)
    # 02:30 on 2021-03-28 in London is BST (UTC+1): 01:30 UTC; Total is kWh.
    assert r.ts == datetime(2021, 3, 28, 1, 30, tzinfo=timezone.utc)
    assert (r.home_id, r.device_id, r.power_w, r.energy_wh, r.voltage_v) == ("home-b", "tv", 233.0, 12345.0, 231.0)
    winter = {"Time": "2021-03-28T00:30:00", "ENERGY": {"Power": 5, "Total": 1.0}}
    _, results = run("tele/tasmota_plug/SENSOR", winter, now=datetime(2021, 3, 28, 2, 0, tzinfo=timezone.utc))
    assert one_reading(results).ts == datetime(2021, 3, 28, 0, 30, tzinfo=timezone.utc)  # GMT


def test_tasmota_arrays_are_one_device_per_channel():
    _, results = run("tele/tasmota_dual/SENSOR", payload("tasmota_sensor_dual.json"),
                     now=datetime(2021, 11, 6, 15, 1, tzinfo=timezone.utc))
    assert [(r.device_id, r.power_w, r.energy_wh, r.current_a) for r in results] == [
        ("dryer", 1688.0, 1500.0, 7.34), ("washer", 0.0, 2250.0, 0.0)]
    assert all(r.ts == datetime(2021, 11, 6, 15, 0, tzinfo=timezone.utc) for r in results)


def test_tasmota_scalar_total_with_array_power_carries_no_counter():
    body = {"Time": "2021-11-06T15:00:00", "ENERGY": {"Total": 3.0, "Power": [10, 20]}}
    _, results = run("tele/tasmota_dual/SENSOR", body, now=datetime(2021, 11, 6, 15, 1, tzinfo=timezone.utc))
    assert [(r.power_w, r.energy_wh) for r in results] == [(10.0, None), (20.0, None)]


def test_tasmota_unregistered_channel_and_device_are_dead_lettered():
    body = {"Time": "2021-11-06T15:00:00", "ENERGY": {"Power": [10, 20, 30]}}
    _, results = run("tele/tasmota_dual/SENSOR", body, now=datetime(2021, 11, 6, 15, 1, tzinfo=timezone.utc))
    assert [type(x).__name__ for x in results] == ["Reading", "Reading", "DeadLetter"]
    assert "tasmota_dual channel 2" in results[2].reason
    assert "unregistered tasmota device ghost" in one_dead(run("tele/ghost/SENSOR", body)[1]).reason


def test_zigbee2mqtt_plug_in_kwh_with_last_seen():
    _, results = run("zigbee2mqtt/kitchen_plug", payload("zigbee2mqtt_plug.json"))
    r = one_reading(results)
    assert (r.home_id, r.device_id, r.power_w, r.energy_wh, r.voltage_v, r.current_a) == (
        "home-a", "kettle", 2950.5, 1250.0, 229.8, 12.84)
    assert r.ts == datetime(2024, 2, 1, 8, 15, 30, tzinfo=timezone.utc)


def test_zigbee2mqtt_devices_without_power_are_not_errors_but_unregistered_power_is():
    assert run("zigbee2mqtt/hallway_sensor", {"temperature": 21.5, "humidity": 40})[1] == []
    assert run("zigbee2mqtt/bridge", {"state": "online"})[1] == []
    assert "unregistered zigbee2mqtt device garage" in one_dead(run("zigbee2mqtt/garage", {"power": 3})[1]).reason


@pytest.mark.parametrize("text, message", [
    ('[[device]]\nsource = "shelly"\n', "'vendor_id' is required"),
    ('[[device]]\nsource = "x"\nvendor_id="a"\nhome_id="h"\ndevice_id="d"\n', "unknown source 'x'"),
    ('[[device]]\nsource = "shelly"\nvendor_id="a"\nhome_id="h"\ndevice_id="d"\nkind="fridge"\n', "unknown kind 'fridge'"),
    ('[[device]]\nsource = "tasmota"\nvendor_id="a"\nhome_id="h"\ndevice_id="d"\ntimezone="Mars/Olympus"\n', "unknown time zone"),
    ("this is = = not toml", "not valid TOML"),
    ('[[home]]\nhome_id = "h"\ntimezone = "Europe/Lndon"\n', "home #1: unknown time zone"),
    ('[[home]]\ntimezone = "Europe/London"\n', "home #1: 'home_id' is required"),
])
def test_bad_registry_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "registry.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Registry.load(path)


def test_registry_round_trips_to_device_rows():
    infos = {(d.home_id, d.device_id): d for d in REG.device_infos()}
    assert infos[("home-a", "washer")].channel == 1 and infos[("home-a", "washer")].timezone == "Europe/London"
    assert infos[("home-b", "mains")].kind == DeviceKind.METER
    assert pickle.loads(pickle.dumps(REG)).lookup(Source.ZIGBEE2MQTT, "kitchen_plug", None).device_id == "kettle"


def test_a_home_time_zone_comes_from_its_entry_else_its_devices_else_the_default(tmp_path):
    path = tmp_path / "registry.toml"
    path.write_text((FIXTURES / "registry.toml").read_text()
                    + '\n[[home]]\nhome_id = "home-c"\ntimezone = "Australia/Brisbane"\n')
    reg = Registry.load(path)
    assert reg.home_timezone("home-c") == "Australia/Brisbane"
    assert reg.home_timezone("home-a") == "Europe/London"  # from its Tasmota devices
    assert reg.home_timezone("nowhere", default="Europe/Berlin") == "Europe/Berlin"


# --- Every real device: formats and topic layouts beyond the defaults (issue 12, item 8) ------

DEVICES = Registry.load(FIXTURES / "registry_devices.toml")
JUNE = datetime(2024, 6, 1, 10, 1, tzinfo=timezone.utc)


def run_devices(topic: str, body, state=None, now=JUNE):
    raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return decode(state, RawMessage(topic, raw, now), DEVICES, V)


def test_shelly_pro_em50_keeps_each_channels_em1data_energy_counter():
    state, results = run_devices("shellyproem50-test03/events/rpc",
                                 payload("shelly_proem50_notifyfullstatus.json"))
    # switch:0 (the dry contact: no apower), sys, wifi, mqtt, ble, cloud, eth, ws: nothing
    assert [(r.device_id, r.kind, r.power_w, r.energy_wh, r.voltage_v, r.current_a) for r in results] == [
        ("grid", DeviceKind.METER, 501.8, 2776175.12, 234.9, 2.598),
        ("pv", DeviceKind.PV, -1200.0, 0.0, 234.9, 0.08)]
    assert all(r.ts == datetime.fromtimestamp(1717236000.25, timezone.utc) for r in results)
    # An energy-only update is still a reading of its meter, with the power it last had.
    _, results = run_devices("shellyproem50-test03/events/rpc",
                             payload("shelly_proem50_notifystatus_em1data.json"), state)
    r = one_reading(results)
    assert (r.device_id, r.power_w, r.energy_wh) == ("grid", 501.8, 2776183.5)


def test_shelly_cover_mode_is_a_device_channel():
    _, results = run_devices("shelly2pmg3-test04/status/cover:0", payload("shelly_2pm_cover_status.json"))
    r = one_reading(results)
    assert (r.home_id, r.device_id, r.power_w, r.energy_wh, r.voltage_v, r.current_a, r.ts) == (
        "home-c", "blinds", 142.6, 52.314, 236.8, 0.65, JUNE)
    rpc = {"method": "NotifyStatus", "params": {"ts": 1717236030, "cover:0": {"id": 0, "apower": 0.0}}}
    _, results = run_devices("shelly2pmg3-test04/events/rpc", rpc)
    assert one_reading(results).power_w == 0.0


@pytest.mark.parametrize("component", sorted(json.loads(payload("shelly_status_without_metering.json"))))
def test_shelly_status_without_measurements_is_recognised_and_not_a_dead_letter(component):
    body = json.loads(payload("shelly_status_without_metering.json"))[component]
    assert run_devices(f"shellyproem50-test03/status/{component}", body)[1] == []
    rpc = {"method": "NotifyStatus", "params": {"ts": 1717236000, component: body}}
    assert run_devices("shellyproem50-test03/events/rpc", rpc)[1] == []


def test_an_unknown_shelly_component_that_carries_power_is_a_dead_letter_not_silence():
    dead = one_dead(run_devices("shelly2pmg3-test04/status/foo:0", {"id": 0, "apower": 12.5})[1])
    assert dead.error == "unsupported_measurement" and "'foo:0' carries 'apower'" in dead.reason
    # In a notification beside a known component: the known one is still read.
    rpc = {"method": "NotifyStatus", "params": {"ts": 1717236000, "cover:0": {"apower": 5.0},
                                                "heatpump:0": {"total_act_energy": 1.0}}}
    _, results = run_devices("shelly2pmg3-test04/events/rpc", rpc)
    assert sorted(type(x).__name__ for x in results) == ["DeadLetter", "Reading"]
    dead = next(x for x in results if isinstance(x, DeadLetter))
    assert dead.error == "unsupported_measurement" and "heatpump:0" in dead.reason


def _subscribed(topic: str, registry: Registry) -> bool:
    return any(matches(f, topic) for f in subscriptions(registry))


def test_shelly_gen1_topics_are_heard_and_watt_minutes_become_wh():
    state, readings = None, []
    heard = []
    for topic, body in json.loads(payload("shelly_gen1_messages.json")):
        if not _subscribed(topic, DEVICES):
            continue  # e.g. relay/0 ("on"), temperature: the flow never receives them
        heard.append(topic.split("/", 2)[2])
        state, out = run_devices(topic, body, state)
        assert not any(isinstance(x, DeadLetter) for x in out), out
        readings += out
    assert "relay/0" not in heard and "temperature" not in heard and "emeter/0/pf" in heard
    assert [(r.device_id, r.power_w, r.voltage_v, r.current_a) for r in readings] == [
        ("fridge", 85.31, None, None), ("phase-a", 10.66, 232.06, 0.08)]
    fridge, phase_a = readings
    assert fridge.energy_wh == pytest.approx(1234567 / 60)  # relay energy: watt-minutes
    assert phase_a.energy_wh == 1184633.1  # emeter total: Wh, kept across restarts
    assert route_key("shellies/shellyplug-s-040BAD/relay/0/power") == "shelly1/shellyplug-s-040BAD"


@pytest.mark.parametrize("topic, body, message", [
    ("shellies/shellyplug-s-040BAD/relay/0/power", "on", "invalid JSON"),
    ("shellies/shellyplug-s-040BAD/relay/0/power", '"85"', "must be a number"),
    ("shellies/shellyplug-s-040BAD/relay/x/power", "5", "not a number from 0"),
    ("shellies/shellyplug-s-040BAD/relay/7/power", "5", "unregistered shelly device shellyplug-s-040BAD channel 7"),
    ("shellies/shellyem3-C45BBE7928B9/emeter/0/apparent_power", "5", "not a measurement this decoder knows"),
    ("shellies/shellyplug-s-040BAD/relay/0/power", "1e9", "outside the bounds"),
])
def test_bad_shelly_gen1_values_are_dead_letters(topic, body, message):
    assert message in one_dead(run_devices(topic, body)[1]).reason


def test_tasmota_full_topic_and_prefix_from_the_registry():
    subs = subscriptions(DEVICES)
    assert {"plug2/tele/SENSOR", "telemetry/garage_plug/SENSOR",
            "house/tasmota-tele/heater/SENSOR", "tele/+/SENSOR"} <= set(subs)
    body = payload("tasmota_sensor_single.json")
    now = datetime(2021, 3, 28, 3, 0, tzinfo=timezone.utc)
    for topic, device in [("plug2/tele/SENSOR", "tv"), ("telemetry/garage_plug/SENSOR", "freezer"),
                          ("house/tasmota-tele/heater/SENSOR", "heater")]:
        r = one_reading(run_devices(topic, body, now=now)[1])
        assert (r.device_id, r.power_w, r.energy_wh) == (device, 233.0, 12345.0)
    # plug2 reports London time (the registry says so), garage_plug UTC (the default).
    assert one_reading(run_devices("plug2/tele/SENSOR", body, now=now)[1]).ts == datetime(2021, 3, 28, 1, 30, tzinfo=timezone.utc)
    # Without its layout in the registry, the same topic is no device's.
    assert one_dead(run("plug2/tele/SENSOR", body, now=now)[1]).error == "unknown_topic"


def test_zigbee2mqtt_base_topic_and_names_with_a_slash():
    subs = subscriptions(DEVICES)
    assert {"zigbee2mqtt/#", "home/z2m/#"} <= set(subs)
    body = payload("zigbee2mqtt_plug.json")
    r = one_reading(run_devices("zigbee2mqtt/ground floor/kitchen plug", body)[1])
    assert (r.device_id, r.power_w, r.energy_wh) == ("kettle", 2950.5, 1250.0)
    r = one_reading(run_devices("home/z2m/washer plug", body)[1])
    assert (r.home_id, r.device_id) == ("home-c", "washer")
    assert route("zigbee2mqtt/ground floor/kitchen plug/power", DEVICES).kind == "ignore"  # an attribute
    assert route("zigbee2mqtt/ground floor/kitchen plug/power").kind == "zigbee2mqtt"  # unregistered: a name
    # An unregistered device under a configured base is dead-lettered like one under the default.
    dead = one_dead(run_devices("home/z2m/dryer plug", {"power": 3})[1])
    assert dead.error == "unregistered_device" and "dryer plug" in dead.reason
    dead = one_dead(run_devices("zigbee2mqtt/upstairs/dryer", {"power": 3})[1])
    assert dead.error == "unregistered_device" and "upstairs/dryer" in dead.reason


def test_zigbee2mqtt_attribute_and_json_output_is_one_reading_and_no_dead_letters():
    readings = []
    for topic, body in json.loads(payload("zigbee2mqtt_attribute_and_json.json")):
        assert _subscribed(topic, DEVICES), topic
        readings += run_devices(topic, json.dumps(body))[1]
    assert [(type(x).__name__, getattr(x, "device_id", None)) for x in readings] == [("Reading", "kettle")]
    # an attribute of an unregistered device: nothing to store (its JSON state is dead-lettered)
    assert run_devices("zigbee2mqtt/upstairs/dryer/power", "3")[1] == []


def test_three_phase_meters_are_stored_as_their_total():
    r = one_reading(run("shellypro3em-test02/events/rpc", payload("shelly_notifystatus_em.json"))[1])
    # total_act_power, not a phase's: 951.2 - 464.3 + 244.0 = 730.9 W; total_act 1750.5 Wh
    assert (r.power_w, r.energy_wh) == (730.9, 1750.5)


@pytest.mark.parametrize("text, message", [
    ('[[device]]\nsource="tasmota"\nvendor_id="p"\nhome_id="h"\ndevice_id="d"\nfull_topic="%topic%/"\n', "must hold %prefix%"),
    ('[[device]]\nsource="tasmota"\nvendor_id="p"\nhome_id="h"\ndevice_id="d"\nprefix="tele/#"\n', "without \\+ or #"),
    ('[[device]]\nsource="shelly"\nvendor_id="p"\nhome_id="h"\ndevice_id="d"\nbase_topic="z"\n', "'base_topic' does not apply to a shelly device"),
    ('[[device]]\nsource="zigbee2mqtt"\nvendor_id="p"\nhome_id="h"\ndevice_id="d"\nfull_topic="%prefix%/x"\n', "'full_topic' does not apply"),
    ('[[device]]\nsource="tasmota"\nvendor_id="a/b"\nhome_id="h"\ndevice_id="d"\n', "cannot contain '/'"),
    ('[[device]]\nsource="zigbee2mqtt"\nvendor_id="p"\nhome_id="h"\ndevice_id="d"\nbase_topic="/z2m"\n', "not starting"),
])
def test_bad_topic_layouts_in_the_registry_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "registry.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Registry.load(path)


def test_subscriptions_never_overlap():
    """A topic two filters match could be delivered twice: a default layout given explicitly
    adds no filter of its own."""
    reg = Registry([RegistryEntry(Source.TASMOTA, "p", None, "h", "d", DeviceKind.APPLIANCE,
                                  full_topic="%prefix%/%topic%/")])
    assert reg.tasmota_topics() == {"tele/p/SENSOR": "p"}
    assert subscriptions(reg) == subscriptions()


def test_ids_are_checked_once_per_reading(monkeypatch):
    """A native topic's ids are checked before the parse, so the reading's check skips them
    (the decode step is hot); vendor readings get their ids from the registry and are checked."""
    import pipeline.ingest.validation as validation

    seen: list[str] = []
    real = validation.check_id

    def counting(value, what, settings):
        seen.append(value)
        return real(value, what, settings)

    monkeypatch.setattr(validation, "check_id", counting)
    one_reading(run("shems/home-a/plug-1/reading", {"ts": NOW.isoformat(), "power_w": 5})[1])
    assert seen == []
    one_reading(run("tele/tasmota_plug/SENSOR", payload("tasmota_sensor_single.json"),
                    now=datetime(2021, 3, 28, 2, 0, tzinfo=timezone.utc))[1])
    assert seen == ["home-b", "tv"]


# --- Smart-meter readers: Tasmota SENSOR without ENERGY ----------------------------------------

SML_READERS = [
    {"source": "tasmota", "vendor_id": "sml_mapped", "channel": 0, "home_id": "home-s", "device_id": "grid",
     "kind": "meter", "timezone": "Europe/Berlin", "power_path": "SML.Power_curr", "energy_path": "SML.Total_in"},
    {"source": "tasmota", "vendor_id": "sml_unmapped", "channel": 0, "home_id": "home-s", "device_id": "grid2",
     "kind": "meter"},
    {"source": "tasmota", "vendor_id": "th_relay", "channel": 0, "home_id": "home-s", "device_id": "boiler"},
]


def _registry_of(tmp_path, entries=SML_READERS) -> Registry:
    path = tmp_path / "registry.toml"
    path.write_text("".join("[[device]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in e.items())
                            for e in entries))
    return Registry.load(path)


def test_a_smart_meter_reader_is_read_where_its_registry_entry_says(tmp_path):
    reg = _registry_of(tmp_path)
    captured = json.loads(payload("tasmota_sml_sensor.json"))
    got = []
    for body in captured:
        received = datetime.fromisoformat(body["Time"]).replace(tzinfo=timezone.utc)
        _, results = run("tele/sml_mapped/SENSOR", body, now=received, registry=reg)
        got.append(one_reading(results))
    # Export is negative power; Total_in is kWh; Time is the device's local (Berlin) clock.
    assert [(r.device_id, r.power_w, r.energy_wh) for r in got] == [
        ("grid", -894.0, pytest.approx(34507476.1)), ("grid", -36.0, pytest.approx(2687368.7))]
    assert got[0].ts == datetime(2022, 7, 7, 11, 1, 11, tzinfo=timezone.utc)  # CEST
    assert got[1].ts == datetime(2026, 1, 21, 10, 7, 31, tzinfo=timezone.utc)  # CET


def test_an_unmapped_smart_meter_reader_is_dead_lettered_with_what_to_set(tmp_path):
    reg = _registry_of(tmp_path)
    body = json.loads(payload("tasmota_sml_sensor.json"))[0]
    _, results = run("tele/sml_unmapped/SENSOR", body, registry=reg)
    letter = one_dead(results)
    assert letter.error == "unsupported_measurement"
    assert "SML.Total_in" in letter.reason and "power_path" in letter.reason
    # A relay with a thermometer and no energy monitor measures nothing: no dead letter.
    thermo = {"Time": "2024-02-01T09:00:00", "DS18B20": {"Id": "01", "Temperature": 61.5}, "TempUnit": "C"}
    assert run("tele/th_relay/SENSOR", thermo, registry=reg)[1] == []
    # The mapped reader without its power value in a message: that message is dead-lettered.
    partial = {"Time": "2024-02-01T09:00:00", "SML": {"Total_in": 10.5}}
    letter = one_dead(run("tele/sml_mapped/SENSOR", partial, registry=reg)[1])
    assert letter.error == "missing_field" and "SML.Power_curr" in letter.reason
    wrong = {"Time": "2024-02-01T09:00:00", "SML": {"Power_curr": "12"}}
    letter = one_dead(run("tele/sml_mapped/SENSOR", wrong, registry=reg)[1])
    assert "SML.Power_curr must be a number" in letter.reason


@pytest.mark.parametrize("extra, message", [
    ({"source": "shelly", "power_path": "SML.Power_curr"}, "apply to tasmota devices only"),
    ({"energy_path": "SML.Total_in"}, "'energy_path' needs 'power_path'"),
    ({"power_path": "SML..Power"}, "must be a dotted path"),
    ({"power_path": 5}, "must be a dotted path"),
])
def test_bad_sensor_paths_in_the_registry_say_what_is_wrong(tmp_path, extra, message):
    entry = {"source": "tasmota", "vendor_id": "x", "home_id": "h", "device_id": "d"} | extra
    with pytest.raises(ValueError, match=message):
        _registry_of(tmp_path, [entry])


def test_a_registered_zigbee2mqtt_meter_without_power_is_dead_lettered_not_dropped(tmp_path):
    reg = _registry_of(tmp_path, [
        {"source": "zigbee2mqtt", "vendor_id": "3ph meter", "home_id": "h", "device_id": "mains", "kind": "meter"},
        {"source": "zigbee2mqtt", "vendor_id": "relay", "home_id": "h", "device_id": "boiler"}])
    three_phase = {"power_a": 120, "power_b": 80, "power_c": 15, "energy": 1234.5, "linkquality": 90}
    letter = one_dead(run("zigbee2mqtt/3ph meter", three_phase, registry=reg)[1])
    assert letter.error == "unsupported_measurement" and "power_a" in letter.reason
    # A registered relay without metering: settings and counters named "power" are no measurement.
    relay = {"state": "ON", "power_on_behavior": "previous", "power_outage_count": 3, "linkquality": 70}
    assert run("zigbee2mqtt/relay", relay, registry=reg)[1] == []
    # Unregistered devices without power stay silent (a Zigbee network is mostly sensors).
    assert run("zigbee2mqtt/other", three_phase, registry=reg)[1] == []


# Every Gen2/Gen3/Gen4 Shelly status captured from a real device in Luligu/matterbridge-shelly
# (tests/fixtures/payloads/README.md): 72 captures, 50 models, from plugs to the Pro 3EM.
_REAL_POWER_FIELD = {"switch": "apower", "pm1": "apower", "cover": "apower", "light": "apower", "rgb": "apower",
                     "rgbw": "apower", "cct": "apower", "em": "total_act_power", "em1": "act_power"}


def _expected_readings(status: dict) -> dict[str, tuple[float, float | None]]:
    """device id -> (power W, energy Wh) as the capture states them, read independently of the
    decoder: each component with a power field, its counter where Shelly keeps it."""
    out = {}
    for name, fields in status.items():
        kind, channel = name.split(":")
        power = fields.get(_REAL_POWER_FIELD.get(kind, ""))
        if isinstance(power, (int, float)):
            energy = (status.get(f"emdata:{channel}", {}).get("total_act") if kind == "em"
                      else status.get(f"em1data:{channel}", {}).get("total_act_energy") if kind == "em1"
                      else (fields.get("aenergy") or {}).get("total"))
            out[f"{kind}-{channel}"] = (float(power), energy)
    return out


def test_every_real_gen2_plus_shelly_capture_decodes_to_the_values_it_holds(tmp_path):
    captures = json.loads(payload("shelly_gen2plus_real_status.json"))["devices"]
    assert len(captures) == 72
    read = 0
    for capture in captures:
        status = capture["status"]
        expected = _expected_readings(status)
        channels = [device.split("-")[1] for device in expected]
        registry = _registry_of(tmp_path, [
            {"source": "shelly", "vendor_id": capture["id"], "channel": int(device.split("-")[1]),
             "home_id": "real", "device_id": device}
            # Two metered components with one number (a Pro RGBWW PM's rgb:0 and cct:0): one entry each.
            | ({"component": device.split("-")[0]} if channels.count(device.split("-")[1]) > 1 else {})
            for device in expected])
        body = {"src": capture["id"], "dst": f"{capture['id']}/events", "method": "NotifyFullStatus",
                "params": {"ts": capture["unixtime"], **status}}
        taken = datetime.fromtimestamp(capture["unixtime"], timezone.utc)
        _, results = run(f"{capture['id']}/events/rpc", body, now=taken + timedelta(seconds=2), registry=registry)
        dead = [d.reason for d in results if isinstance(d, DeadLetter)]
        got = {r.device_id: (r.power_w, r.energy_wh) for r in results if isinstance(r, Reading)}
        assert (got, dead) == (expected, []), capture["file"]
        assert all(r.ts == taken for r in results), capture["file"]
        read += len(got)
    assert read >= 70  # 76 metered components: switches, covers, lights, plugs, meters


def test_two_metered_components_with_one_number_and_one_registry_entry_are_dead_lettered(tmp_path):
    """A Pro RGBWW PM in its RGB + CCT profile measures rgb:0 and cct:0 apart. Read into the one
    entry of channel 0, the two took turns as one device (powers alternating, the counter jumping
    between two totals); now each is dead-lettered until the registry tells them apart."""
    capture = next(c for c in json.loads(payload("shelly_gen2plus_real_status.json"))["devices"]
                   if c["file"] == "src/mock/shellyprorgbwwpm-2CBCBBA78F00.json")
    registry = _registry_of(tmp_path, [{"source": "shelly", "vendor_id": capture["id"], "channel": 0,
                                        "home_id": "real", "device_id": "led-strip"}])
    body = {"method": "NotifyFullStatus", "params": {"ts": capture["unixtime"], **capture["status"]}}
    now = datetime.fromtimestamp(capture["unixtime"] + 2, timezone.utc)
    state, results = run(f"{capture['id']}/events/rpc", body, now=now, registry=registry)
    assert [type(r) for r in results] == [DeadLetter, DeadLetter]
    assert all(d.error == "unregistered_device" and 'component = "' in d.reason for d in results)
    # Later updates of one of them alone are refused alike: the device state still holds both.
    update = {"method": "NotifyStatus", "params": {"ts": capture["unixtime"] + 60, "rgb:0": {"apower": 7.5}}}
    _, results = run(f"{capture['id']}/events/rpc", update, state, now=now + timedelta(minutes=1), registry=registry)
    assert one_dead(results).error == "unregistered_device"


def test_a_registry_with_one_device_and_channel_twice_is_refused(tmp_path):
    """The later entry silently took the earlier one's readings."""
    twice = [{"source": "shelly", "vendor_id": "shellyplus2pm-x", "channel": 1, "home_id": "h", "device_id": d}
             for d in ("oven", "hob")]
    with pytest.raises(ValueError, match=r"device #2: the same shelly device and channel as device #1"):
        _registry_of(tmp_path, twice)
    with pytest.raises(ValueError, match="the same tasmota device and channel"):  # channel 0 is no channel
        _registry_of(tmp_path, [{"source": "tasmota", "vendor_id": "plug", "home_id": "h", "device_id": "a"},
                                {"source": "tasmota", "vendor_id": "plug", "channel": 0, "home_id": "h",
                                 "device_id": "b"}])
    with pytest.raises(ValueError, match="'component' names a Shelly component kind"):
        _registry_of(tmp_path, [{"source": "shelly", "vendor_id": "x", "home_id": "h", "device_id": "d",
                                 "component": "toaster"}])
