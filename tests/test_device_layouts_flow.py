"""The real flow hears every device format and topic layout the registry names (issue 12, item
8): Shelly Gen1 topics, a Pro EM-50's em1data counters, a 2PM in cover mode, Tasmota with a
changed FullTopic or telemetry prefix, Zigbee2MQTT under a changed base topic, with a friendly
name holding '/' and attribute sub-topics. Real Mosquitto, real Bytewax, SQLite.

Each device publishes what it really publishes, including topics that carry nothing to store
(a Gen1 relay's on/off, Zigbee2MQTT attributes and availability, bridge messages, Shelly sys and
wifi status): none of them may become a dead letter, and every measurement must be stored.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from sinks.stores import open_store
from tests.conftest import FIXTURES
from tests.flowproc import FlowProcess, TestPublisher

PAYLOADS = FIXTURES / "payloads"


def _messages(now: datetime) -> list[tuple[str, str | bytes | dict]]:
    out: list[tuple[str, str | bytes | dict]] = []
    out += [(t, p) for t, p in json.loads((PAYLOADS / "shelly_gen1_messages.json").read_text())]
    for topic, body in json.loads((PAYLOADS / "zigbee2mqtt_attribute_and_json.json").read_text()):
        out.append((topic, json.dumps(body)))
    out.append(("home/z2m/washer plug", {"state": "ON", "power": 412.0, "energy": 80.5}))
    full = json.loads((PAYLOADS / "shelly_proem50_notifyfullstatus.json").read_text())
    full["params"]["ts"] = now.timestamp()
    out.append(("shellyproem50-test03/events/rpc", full))
    for component, body in json.loads((PAYLOADS / "shelly_status_without_metering.json").read_text()).items():
        out.append((f"shellyproem50-test03/status/{component}", body))
    out.append(("shelly2pmg3-test04/status/cover:0", (PAYLOADS / "shelly_2pm_cover_status.json").read_bytes()))
    local = now.astimezone(ZoneInfo("Europe/London")).replace(tzinfo=None).isoformat(timespec="seconds")
    utc = now.replace(tzinfo=None).isoformat(timespec="seconds")
    out.append(("plug2/tele/SENSOR", {"Time": local, "ENERGY": {"Power": 95, "Total": 3.5}}))
    out.append(("telemetry/garage_plug/SENSOR", {"Time": utc, "ENERGY": {"Power": 120, "Total": 7.25}}))
    out.append(("house/tasmota-tele/heater/SENSOR", {"Time": utc, "ENERGY": {"Power": 1999, "Total": 1.0}}))
    return out


@pytest.mark.timeout(240)
def test_the_flow_hears_every_registered_layout_and_dead_letters_nothing(sqlite_url, mqtt_url,
                                                                        topic_prefix):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix,
                       extra_args=["--registry", str(FIXTURES / "registry_devices.toml"), "--no-insights"])
    flow.start(idle_exit=8)
    pub = TestPublisher()
    for topic, payload in _messages(now):
        pub.publish(topic_prefix + topic, payload)
    pub.close()
    assert flow.wait() == 0, "\n".join(flow.log_lines[-30:])

    store = open_store(sqlite_url)
    try:
        dead = store.dead_letters()
        assert dead == [], [(d.topic, d.reason) for d in dead]
        got = {(r.home_id, r.device_id): r for r in store.readings()}
    finally:
        store.close()
    assert set(got) == {("home-c", d) for d in ("fridge", "kettle", "washer", "grid", "pv", "blinds",
                                                "tv", "freezer", "heater")} | {("home-d", "phase-a")}
    assert got[("home-c", "fridge")].energy_wh == pytest.approx(1234567 / 60)  # watt-minutes
    assert got[("home-d", "phase-a")].energy_wh == pytest.approx(1184633.1)
    assert got[("home-c", "grid")].energy_wh == pytest.approx(2776175.12)  # em1data
    assert got[("home-c", "pv")].power_w == -1200.0
    assert got[("home-c", "blinds")].power_w == 142.6
    assert got[("home-c", "kettle")].energy_wh == pytest.approx(1250.0)
    assert got[("home-c", "washer")].energy_wh == pytest.approx(80500.0)
    assert got[("home-c", "tv")].ts == now  # London local time, converted
    assert (got[("home-c", "freezer")].power_w, got[("home-c", "heater")].power_w) == (120.0, 1999.0)
