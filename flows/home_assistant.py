"""Home Assistant output of the flow (``shems run --ha-discovery``): per home, the values of
``pipeline/ha/state.py`` computed in a keyed step, and an MQTT sink that announces each home's
sensors by discovery (retained) and publishes their states as they change.

    home minutes, forecasts, anomalies, recommendations
        -> key: home -> ha_states (HomeDashboard per home; the minutes priced with the tariff book)
        -> HaUpdate (only the sensors that changed) -> HomeAssistantSink (paho, QoS 1, retained)

The sink's client has a last will: when the flow dies the broker marks every shems sensor
unavailable; a clean stop publishes "offline" itself. States and configs are retained, so Home
Assistant restarting finds them. With several workers each publishes its own homes.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

import bytewax.operators as op
import orjson
import paho.mqtt.client as mqtt
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.logic import _GuardedLogic, restored
from pipeline import metrics
from pipeline.config import parse_mqtt_url
from pipeline.energy.tariff import TariffBook
from pipeline.ha.discovery import AVAILABLE, NOT_AVAILABLE, Topics, discovery_configs
from pipeline.ha.state import HaUpdate, HomeDashboard, Pricer
from pipeline.ingest.registry import Registry
from pipeline.logs import get_logger
from pipeline.records import Anomaly, DeadLetter, Forecast, HomeWindow, Recommendation

log = get_logger(__name__)

HaInput = HomeWindow | Forecast | Anomaly | Recommendation


@dataclass(frozen=True)
class HaSetup:
    mqtt_url: str
    topics: Topics
    registry: Registry
    default_timezone: str
    book: TariffBook | None
    client_id_prefix: str = "shems-ha"


class HaStateLogic(_GuardedLogic):
    """Per home: the dashboard state; emits the sensors that changed after each batch."""

    step = "ha_states"

    def __init__(self, setup: HaSetup, state: HomeDashboard | None) -> None:
        super().__init__(state, metrics.worker_label())
        self.setup = setup
        self.pricer = Pricer(setup.book)  # per key: a day of this home's minute prices

    def fresh_state(self, record) -> HomeDashboard | None:
        if record is None:
            return None
        home = record.home_id
        return HomeDashboard(home, self.setup.registry.home_timezone(home, self.setup.default_timezone))

    def handle(self, record: HaInput):
        if self.state is None:
            self.state = self.fresh_state(record)
        if isinstance(record, HomeWindow):
            self.state.add(record, *self.pricer.minute(record))
        else:
            self.state.add(record)
        return []

    def on_batch(self, values: list[HaInput]):
        ordered: list[HaInput] = sorted(values, key=_order)
        out = self.run_records(ordered)
        if self.state is not None:
            currency = self.setup.book.currency if self.setup.book is not None else None
            out.extend(self.guarded("ha_changes", lambda: [u for u in [self.state.changes(currency)] if u])[0])
        return out, StatefulBatchLogic.RETAIN


def _order(record: HaInput) -> tuple[int, float]:
    """Minutes in time order, then everything else (forecasts, anomalies, recommendations)."""
    return (0, record.bucket.timestamp()) if isinstance(record, HomeWindow) else (1, 0.0)


def _home_key(record: HaInput) -> str:
    try:
        return str(record.home_id)
    except Exception:  # noqa: BLE001
        return "\x1funkeyable"


@dataclass(frozen=True)
class HaOut:
    updates: Stream[HaUpdate]
    dead_letters: Stream[DeadLetter]


@operator
def home_assistant_states(step_id: str, home_windows: Stream[HomeWindow], insights: Stream | None,
                          setup: HaSetup) -> HaOut:
    inputs = home_windows if insights is None else op.merge(
        "ha_inputs", home_windows,
        op.filter("ha_insights", insights, lambda x: isinstance(x, Forecast | Anomaly | Recommendation)))
    keyed = op.key_on("ha_by_home", inputs, _home_key)

    def build(resume: bytes | None) -> HaStateLogic:
        state, dead = restored(HaStateLogic.step, resume)
        return HaStateLogic(setup, state).unreadable(dead)

    found = op.key_rm("ha_out", op.stateful_batch("ha_states", keyed, build))
    split = op.branch("ha_update_or_dead_letter", found, lambda x: isinstance(x, HaUpdate))
    return HaOut(split.trues, split.falses)


class _HaPartition(StatelessSinkPartition):
    def __init__(self, setup: HaSetup, worker_index: int) -> None:
        self.setup = setup
        self.topics = setup.topics
        self.announced: set[str] = set()
        self.connected = threading.Event()
        endpoint = parse_mqtt_url(setup.mqtt_url)
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"{setup.client_id_prefix}-{worker_index}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        endpoint.configure(self.client)
        self.client.will_set(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.max_queued_messages_set(100_000)  # while the broker is away; older states are stale anyway
        self.client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("ha_connect_failed", reason=str(reason_code))
            return
        # After a reconnect too: the will may have marked everything unavailable meanwhile.
        client.publish(self.topics.availability, AVAILABLE, qos=1, retain=True)
        self.connected.set()

    def _publish(self, topic: str, payload: dict | str) -> None:
        data = payload if isinstance(payload, str) else orjson.dumps(payload)
        self.client.publish(topic, data, qos=1, retain=True)

    def write_batch(self, items: list[HaUpdate]) -> None:
        for u in items:
            if u.home_id not in self.announced:
                for topic, config in discovery_configs(u.home_id, self.topics, u.currency):
                    self._publish(topic, config)
                self.announced.add(u.home_id)
                log.info("ha_discovery_published", home=u.home_id, sensors=len(discovery_configs(
                    u.home_id, self.topics, u.currency)))
            for key, attrs in u.attributes:
                self._publish(self.topics.attributes(u.home_id, key), attrs)
            for key, state in u.states:
                self._publish(self.topics.state(u.home_id, key), state)

    def close(self) -> None:
        if self.connected.is_set():
            info = self.client.publish(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=5)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()


class HomeAssistantSink(DynamicSink):
    def __init__(self, setup: HaSetup) -> None:
        self.setup = setup

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _HaPartition:
        return _HaPartition(self.setup, worker_index)
