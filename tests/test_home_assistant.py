"""Home Assistant: discovery payloads checked against HA's documented rules (tests/ha_schema.py),
the sensors' arithmetic (pure, pipeline/ha/state.py), and a real `shems run --ha-discovery`
against the real Mosquitto: configs retained with availability, states that follow the flow as
readings are published, and "offline" when the flow stops."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pipeline.energy.tariff import book_from_mapping
from pipeline.ha.discovery import SENSORS, Topics, discovery_configs, node_id
from pipeline.ha.state import HomeDashboard, price_windows
from pipeline.records import Anomaly, AnomalyKind, Forecast, HomeWindow, Recommendation
from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.flowproc import FlowProcess, TestPublisher
from tests.ha_schema import problems, state_problems

ROOT = Path(__file__).resolve().parents[1]
TARIFFS = ROOT / "deploy" / "tariffs.example.toml"
FLAT = book_from_mapping({"currency": "EUR", "timezone": "Europe/Berlin",
                          "tariff": [{"effective_from": "2020-01-01", "kind": "flat", "import_price": 0.30}]})


# ------------------------------------------------------------------------------ discovery payloads

def test_every_discovery_payload_follows_home_assistants_rules():
    configs = discovery_configs("house 7/ä", Topics("homeassistant", "pre/"), "GBP")
    assert len(configs) == len(SENSORS) == 8
    for topic, config in configs:
        assert problems(topic, config) == [], (topic, problems(topic, config))
    assert len({c["unique_id"] for _, c in configs}) == len(configs)
    by_key = {t.split("/")[3]: c for t, c in configs}
    assert by_key["energy_today"].items() >= {"device_class": "energy", "state_class": "total_increasing",
                                              "unit_of_measurement": "kWh"}.items()
    for key in ("cost_today", "bill_so_far", "bill_projected"):
        assert (by_key[key]["device_class"], by_key[key]["state_class"], by_key[key]["unit_of_measurement"]) \
            == ("monetary", "total", "GBP")
    assert (by_key["power"]["device_class"], by_key["power"]["state_class"]) == ("power", "measurement")
    assert "json_attributes_topic" in by_key["forecast_next_hour"]
    assert not {"state_class", "unit_of_measurement", "device_class"} & set(by_key["top_recommendation"])
    node = node_id("house 7/ä")
    assert all(t.startswith(f"homeassistant/sensor/{node}/") for t, _ in configs)
    assert all(c["availability_topic"] == "pre/shems-ha/availability" for _, c in configs)
    # Without a tariff there is no money: those sensors are left out, the rest stay valid.
    assert {t.split("/")[3] for t, _ in discovery_configs("h", Topics(), None)} == \
        {"power", "energy_today", "forecast_next_hour", "open_anomalies", "top_recommendation"}


def test_the_checker_catches_what_home_assistant_refuses():
    """The rules themselves: each broken payload is caught."""
    (topic, good), *_ = [c for c in discovery_configs("h", Topics(), "GBP") if c[0].endswith("/cost_today/config")]
    assert problems(topic, good) == []
    broken = {
        "state_class total_increasing for money": good | {"state_class": "total_increasing"},
        "currency as a symbol": good | {"unit_of_measurement": "£"},
        "no unique_id with a device": {k: v for k, v in good.items() if k != "unique_id"},
        "no state topic": {k: v for k, v in good.items() if k != "state_topic"},
        "wildcard state topic": good | {"state_topic": "shems-ha/+/x"},
        "device without identifiers": good | {"device": {"name": "x"}},
        "energy in W": good | {"device_class": "energy", "unit_of_measurement": "W",
                               "state_class": "total_increasing"},
    }
    for what, config in broken.items():
        assert problems(topic, config), what
    assert problems("homeassistant/sensor/bad node/x/config", good)


# ------------------------------------------------------------------------------ the values

def window(at: datetime, wh: float, home: str = "h") -> HomeWindow:
    return HomeWindow(home, at, wh * 60, wh * 60, wh * 60, wh, 6)


def test_energy_cost_bill_and_projection_follow_the_minutes_and_reset_in_local_time():
    d = HomeDashboard("h", "Europe/Berlin")
    # 2024-03-10 00:00 in Berlin is 2024-03-09 23:00 UTC: the first two minutes are the 9th locally.
    start = datetime(2024, 3, 9, 22, 58, tzinfo=timezone.utc)
    minutes = [window(start + timedelta(minutes=i), 10.0) for i in range(4)]
    for w, c in zip(minutes, price_windows(minutes, FLAT)):
        assert c == pytest.approx(0.003)
        d.add(w, c)
    states, _ = d.values("EUR")
    assert states["energy_today"] == {"value": 0.02}  # two minutes of the 10th, local time
    assert states["cost_today"] == {"value": 0.01, "last_reset": "2024-03-09T23:00:00Z"}
    # The month so far holds all four (cost 0.012, both days are March); projected over 31 days
    # from 4 minutes is refused (under an hour), so there is no projection yet.
    assert states["bill_so_far"] == {"value": 0.01, "last_reset": "2024-02-29T23:00:00Z"}
    assert "bill_projected" not in states
    for i in range(4, 64):
        d.add(window(start + timedelta(minutes=i), 10.0), 0.003)
    states, _ = d.values("EUR")
    so_far = 64 * 0.003
    assert states["bill_so_far"]["value"] == pytest.approx(round(so_far, 2))
    assert states["bill_projected"]["value"] == pytest.approx(round(so_far / (64 / 60) * (31 * 24 - 1), 2))  # DST: 743 h
    # A re-emitted minute replaces the earlier one; a minute of an older day is ignored.
    d.add(window(start + timedelta(minutes=63), 40.0), 0.012)
    d.add(window(start - timedelta(days=1), 999.0), 1.0)
    assert d.values("EUR")[0]["energy_today"]["value"] == pytest.approx((61 * 10 + 40) / 1000)  # 62 minutes today, one of them replaced


def test_the_minute_pricer_matches_with_cost_across_days_periods_and_export():
    """The per-home day of minute prices gives what the viewer's vectorised pricing gives."""
    import polars as pl

    from pipeline.energy.tariff import book_from_toml, with_cost

    book = book_from_toml(TARIFFS)  # time-of-use: night, weekday peak, export price
    t0 = datetime(2024, 3, 30, 20, 17, tzinfo=timezone.utc)  # over the spring-forward night
    minutes = [window(t0 + timedelta(minutes=4 * i), 8.0 if i % 5 else -3.0, "house7" if i % 2 else "h")
               for i in range(900)]
    ref = with_cost(pl.DataFrame({"home_id": [w.home_id for w in minutes], "bucket": [w.bucket for w in minutes],
                                  "energy_wh": [w.energy_wh for w in minutes]}), book)["cost"].to_list()
    assert price_windows(minutes, book) == pytest.approx(ref, abs=1e-12)
    assert len({round(c / w.energy_wh, 4) for c, w in zip(ref, minutes)}) >= 4  # several prices met
    assert price_windows(minutes[:3], None) == [None, None, None]
    # Past the end of house7's price file there is no price: unpriced, not an error.
    beyond = window(datetime(2024, 4, 3, 0, 5, tzinfo=timezone.utc), 8.0, "house7")
    assert price_windows([beyond], book) == [None]


def test_forecast_anomalies_and_the_top_recommendation_with_their_attributes():
    d = HomeDashboard("h", "UTC")
    t0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    d.add(Forecast("h", t0, t0, 60, 60, 850.0, 500.0, 1300.0, "blend"))
    d.add(Forecast("h", t0, t0, 15, 15, 9999.0, 0, 0, "x"))  # not the next hour's
    a1 = Anomaly("h", "fridge", AnomalyKind.LONG_RUNNING, t0, None, 5.0, "The fridge runs long.")
    a2 = Anomaly("h", "", AnomalyKind.HIGH_CONSUMPTION, t0, None, 3.0, "High.")
    for a in (a1, a2):
        d.add(a)
    cheap = Recommendation("h", "", "standby_waste", t0, "Cut standby", "310 W always on", 50.0, 12.5, "GBP")
    dear = Recommendation("h", "ev", "load_shift", t0, "Charge the EV at night", "...", 0.0, 21.0, "GBP")
    d.add(cheap)
    d.add(dear)
    first = d.changes("GBP")
    assert first is not None
    states, attrs = dict(first.states), dict(first.attributes)
    assert states["forecast_next_hour"] == {"value": 850.0}
    assert attrs["forecast_next_hour"].items() >= {"lower_w": 500.0, "upper_w": 1300.0, "interval": "80%",
                                                 "starts": "2024-05-01T12:00:00Z",
                                                 "ends": "2024-05-01T13:00:00Z"}.items()
    assert states["open_anomalies"] == {"value": 2}
    assert states["top_recommendation"] == {"value": "Charge the EV at night"}
    assert attrs["top_recommendation"]["money_per_month"] == 21.0
    assert d.changes("GBP") is None  # nothing changed: nothing to publish
    d.add(Anomaly("h", "fridge", AnomalyKind.LONG_RUNNING, t0, t0 + timedelta(hours=1), 5.0, "closed"))
    again = d.changes("GBP")
    assert again is not None and dict(again.states) == {"open_anomalies": {"value": 1}}


# ------------------------------------------------------------------------------ the real flow

class Watcher:
    """Subscribes to discovery and state topics and keeps the newest payload of each topic."""

    def __init__(self, *filters: str) -> None:
        self.latest: dict[str, bytes] = {}
        self.history: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(f_, 1) for f_ in filters])
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.latest[msg.topic] = msg.payload
            self.history.setdefault(msg.topic, []).append(msg.payload)

    def wait(self, cond, timeout: float = 90.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = cond(self.latest)
            if got:
                return got
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; have {sorted(self.latest)}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _clear_retained(watcher: Watcher, publisher: TestPublisher) -> None:
    for topic in list(watcher.latest):
        publisher.publish(topic, b"")  # an empty retained message deletes the retained one
    publisher.flush()


def test_shems_run_publishes_discovery_and_states_that_follow_the_flow(tmp_path, topic_prefix):
    home = f"ha-{topic_prefix.strip('/').replace('/', '-')}"
    ha_prefix = f"{topic_prefix}homeassistant"
    node = node_id(home)
    store = f"sqlite:///{tmp_path / 'ha.db'}"
    watcher = Watcher(f"{ha_prefix}/#", f"{topic_prefix}shems-ha/#")
    flow = FlowProcess(f"mqtt://{MQTT_HOST}:{MQTT_PORT}", store, topic_prefix,
                       extra_args=["--ha-discovery", "--ha-prefix", ha_prefix, "--tariffs", str(TARIFFS),
                                   "--timezone", "UTC", "--recovery-dir", str(tmp_path / "recovery")])
    pub = TestPublisher(MQTT_HOST, MQTT_PORT)
    try:
        flow.start()
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        # Minutes of today only (UTC): after 00:25 the run starts within today.
        start = max(now - timedelta(minutes=30), now.replace(hour=0, minute=0))
        if now - start < timedelta(minutes=9):
            pytest.skip("too close to midnight UTC for a day of minutes")
        mid, late = start + (now - start) / 3, start + (now - start) * 2 / 3
        counter = 1_000_000.0

        def publish_span(a: datetime, b: datetime) -> None:
            nonlocal counter
            t = a
            while t < b:
                counter += 2000 / 360  # 2 kW for 10 s
                pub.publish(f"{topic_prefix}shems/{home}/mains/reading",
                            {"ts": t.isoformat(), "power_w": 2000.0, "energy_wh": counter, "kind": "meter"})
                t += timedelta(seconds=10)
            pub.flush()

        energy_topic = f"{topic_prefix}shems-ha/{node}/energy_today/state"
        publish_span(start, mid)
        first = watcher.wait(lambda got: json.loads(got[energy_topic])["value"] if got.get(energy_topic) else None,
                             what="the first energy state")
        assert first > 0
        configs = watcher.wait(lambda got: {t: json.loads(p) for t, p in got.items()
                                            if t.startswith(f"{ha_prefix}/") and p} if sum(
            t.startswith(f"{ha_prefix}/") for t in got) == 8 else None, what="8 discovery configs")
        for topic, config in configs.items():
            assert problems(topic, config) == [], (topic, problems(topic, config))
            assert topic.startswith(f"{ha_prefix}/sensor/{node}/")
        assert watcher.wait(lambda got: got.get(f"{topic_prefix}shems-ha/availability") == b"online",
                            what="availability online")

        publish_span(mid, late)
        grown = watcher.wait(lambda got: (v := json.loads(got[energy_topic])["value"]) > first and v,
                             what="energy today to grow")
        # Each minute is 2 kW for 60 s = 33.3 Wh; the newest minutes may still be open.
        closed_minutes = (late - start) / timedelta(minutes=1)
        assert grown <= closed_minutes * 2000 / 60 / 1000 + 0.01
        assert [json.loads(p)["value"] for p in watcher.history[energy_topic]] == sorted(
            json.loads(p)["value"] for p in watcher.history[energy_topic])
        # Every state a config names that has arrived is valid for its config; money is priced.
        config_by_state = {c["state_topic"]: c for c in configs.values()}
        for topic, payload in watcher.latest.items():
            if topic in config_by_state:
                assert state_problems(config_by_state[topic], json.loads(payload)["value"]) == []
        power = json.loads(watcher.latest[f"{topic_prefix}shems-ha/{node}/power/state"])["value"]
        assert power == pytest.approx(2000.0)
        cost = json.loads(watcher.wait(lambda got: got.get(f"{topic_prefix}shems-ha/{node}/cost_today/state"),
                                       what="cost today"))
        assert cost["value"] > 0 and cost["last_reset"].endswith("Z")
        anomalies = json.loads(watcher.latest[f"{topic_prefix}shems-ha/{node}/open_anomalies/state"])
        assert anomalies == {"value": 0}

        flow.stop()
        assert watcher.wait(lambda got: got.get(f"{topic_prefix}shems-ha/availability") == b"offline",
                            what="availability offline after the stop")

        # With --recovery-dir the day's state survives a restart: today's energy goes on from
        # where it was, it does not start again from the minutes after the restart.
        before = json.loads(watcher.latest[energy_topic])["value"]
        with watcher.lock:
            watcher.history[energy_topic] = []
        flow.start()
        assert watcher.wait(lambda got: got.get(f"{topic_prefix}shems-ha/availability") == b"online",
                            what="availability online after the restart")
        publish_span(late, now)
        after = watcher.wait(lambda got: (v := json.loads(got[energy_topic])["value"]) > before and v,
                             what="energy today to grow after the restart")
        assert min(json.loads(p)["value"] for p in watcher.history[energy_topic]) >= before
        assert after > before
        flow.stop()
    finally:
        flow.kill()
        _clear_retained(watcher, pub)
        watcher.close()
        pub.close()


def test_the_bill_sensor_adds_standing_charge_levy_and_tax_as_the_bill_does():
    """Three days of a home importing and exporting under a tariff with a standing charge, a levy
    and 5 % VAT: "bill so far" is what pipeline.energy.bill makes of the same minutes (that bill
    rounds each line to the cent, so they may differ by a few cents)."""
    import math as _math

    import polars as pl

    from pipeline.energy.bill import bill
    from pipeline.ha.state import Pricer

    book = book_from_mapping({"currency": "EUR", "timezone": "Europe/Berlin", "tariff": [
        {"effective_from": "2020-01-01", "kind": "flat", "import_price": 0.30, "export_price": 0.08,
         "standing_charge": 0.45, "tax_rate": 0.05, "levy_per_kwh": 0.02}]})
    pricer = Pricer(book)
    d = HomeDashboard("h", "Europe/Berlin")
    start = datetime(2024, 5, 31, 22, 0, tzinfo=timezone.utc)  # 2024-06-01 00:00 in Berlin
    minutes = [window(start + timedelta(minutes=i), 20.0 + 15 * _math.sin(i / 50) - (30 if 600 <= i % 1440 < 840 else 0))
               for i in range(3 * 1440)]
    for w in minutes:
        d.add(w, *pricer.minute(w))
    states, _ = d.values("EUR")
    reference = bill(book.history("h"), pl.DataFrame({"bucket": [w.bucket for w in minutes],
                                                     "energy_wh": [w.energy_wh for w in minutes]}),
                     start, minutes[-1].bucket + timedelta(minutes=1), "Europe/Berlin", "h")
    assert reference.days == 3 and reference.export_credit > 0
    assert states["bill_so_far"]["value"] == pytest.approx(float(reference.due), abs=0.05)
    # Without the standing charge and tax it would be far lower: the sensor carries them.
    assert states["bill_so_far"]["value"] > states["cost_today"]["value"] * 3 * 0.5 + 3 * 0.45
    # The projection adds all 30 days' standing charges.
    assert states["bill_projected"]["value"] >= 30 * 0.45 * 1.05
