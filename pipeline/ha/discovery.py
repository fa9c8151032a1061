"""MQTT discovery for Home Assistant: one device per home, one sensor per figure shems computes.

Topics (HA's ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``, retained):

    <ha_prefix>/sensor/<node_id>/<key>/config     the sensor's configuration
    <topic_prefix>shems-ha/<node_id>/<key>/state   its state, JSON {"value": ..., "last_reset"?: ...}
    <topic_prefix>shems-ha/<node_id>/<key>/attributes   extra attributes (forecast, recommendation)
    <topic_prefix>shems-ha/availability            "online" / "offline" (the flow's last will)

State topics live outside ``shems/#`` so the flow never hears its own output. Classes follow HA's
sensor rules: energy in kWh is ``total_increasing`` (HA sees the midnight reset as a new cycle);
money is ``monetary`` with the currency as unit and ``total`` with a ``last_reset`` (day or month
start), the only state class HA allows for it; power in W is ``measurement``; a count has no
device class; the recommendation is a text sensor (no state class, no unit).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

AVAILABLE, NOT_AVAILABLE = "online", "offline"
_NODE_OK = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class SensorSpec:
    key: str  # object id within the home's node
    name: str
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None  # "{currency}" is replaced by the tariff book's currency
    icon: str | None = None
    attributes: bool = False  # has a json_attributes_topic
    last_reset: bool = False  # state JSON carries last_reset (monetary totals that restart)
    needs_tariff: bool = False  # published only when a tariff book gives prices


SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("power", "Power", "power", "measurement", "W"),
    SensorSpec("energy_today", "Energy today", "energy", "total_increasing", "kWh"),
    SensorSpec("cost_today", "Cost today", "monetary", "total", "{currency}", last_reset=True,
               needs_tariff=True),
    SensorSpec("bill_so_far", "Bill so far this month", "monetary", "total", "{currency}",
               last_reset=True, needs_tariff=True),
    SensorSpec("bill_projected", "Bill projected this month", "monetary", "total", "{currency}",
               last_reset=True, needs_tariff=True),
    SensorSpec("forecast_next_hour", "Forecast next hour", "power", "measurement", "W",
               icon="mdi:crystal-ball", attributes=True),
    SensorSpec("open_anomalies", "Open anomalies", None, "measurement", None, icon="mdi:alert-circle",
               attributes=True),
    SensorSpec("top_recommendation", "Top recommendation", icon="mdi:lightbulb-on", attributes=True),
)
SENSOR_KEYS = frozenset(s.key for s in SENSORS)


def node_id(home_id: str) -> str:
    """A home id as HA's node_id ([A-Za-z0-9_-]); ids that had to change get a hash suffix, so
    two homes never share a node."""
    clean = _NODE_OK.sub("_", home_id)[:48]
    if clean == home_id:
        return clean
    return f"{clean}_{hashlib.sha1(home_id.encode()).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class Topics:
    ha_prefix: str = "homeassistant"
    topic_prefix: str = ""

    @property
    def availability(self) -> str:
        return f"{self.topic_prefix}shems-ha/availability"

    def config(self, home_id: str, key: str) -> str:
        return f"{self.ha_prefix}/sensor/{node_id(home_id)}/{key}/config"

    def state(self, home_id: str, key: str) -> str:
        return f"{self.topic_prefix}shems-ha/{node_id(home_id)}/{key}/state"

    def attributes(self, home_id: str, key: str) -> str:
        return f"{self.topic_prefix}shems-ha/{node_id(home_id)}/{key}/attributes"


def discovery_configs(home_id: str, topics: Topics, currency: str | None,
                      version: str = "") -> list[tuple[str, dict]]:
    """(topic, payload) of every sensor of a home; the money sensors only with a currency."""
    node = node_id(home_id)
    device = {"identifiers": [f"shems_{node}"], "name": f"shems {home_id}", "manufacturer": "shems",
              "model": "Home energy"}
    if version:
        device["sw_version"] = version
    out = []
    for s in SENSORS:
        if s.needs_tariff and not currency:
            continue
        payload: dict = {
            "name": s.name,
            "unique_id": f"shems_{node}_{s.key}",
            "state_topic": topics.state(home_id, s.key),
            "value_template": "{{ value_json.value }}",
            "availability_topic": topics.availability,
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
            "device": device,
            "origin": {"name": "shems"},
        }
        if s.device_class:
            payload["device_class"] = s.device_class
        if s.state_class:
            payload["state_class"] = s.state_class
        if s.unit:
            payload["unit_of_measurement"] = s.unit.replace("{currency}", currency or "")
        if s.icon:
            payload["icon"] = s.icon
        if s.attributes:
            payload["json_attributes_topic"] = topics.attributes(home_id, s.key)
        if s.last_reset:
            payload["last_reset_value_template"] = "{{ value_json.last_reset }}"
        if s.device_class == "monetary" or s.key == "energy_today":
            payload["suggested_display_precision"] = 2
        out.append((topics.config(home_id, s.key), payload))
    return out
