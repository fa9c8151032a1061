"""Home Assistant's rules for an MQTT discovery sensor, written from its documentation
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery,
https://www.home-assistant.io/integrations/sensor.mqtt/,
https://developers.home-assistant.io/docs/core/entity/sensor/) and the device-class tables of
``homeassistant/components/sensor/const.py`` (DEVICE_CLASS_UNITS, DEVICE_CLASS_STATE_CLASSES).
``problems`` returns what HA would refuse or warn about; an empty list is a valid config."""

from __future__ import annotations

import re

DISCOVERY_TOPIC = re.compile(r"^(?P<prefix>.+)/(?P<component>sensor)/(?:(?P<node>[A-Za-z0-9_-]+)/)?"
                             r"(?P<object>[A-Za-z0-9_-]+)/config$")
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
DEVICE_CLASS_STATE_CLASSES = {
    "energy": {"total", "total_increasing"},
    "monetary": {"total"},
    "power": {"measurement"},
}
DEVICE_CLASS_UNITS = {
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal", "Gcal"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"},
}
ISO_4217 = re.compile(r"^[A-Z]{3}$")
# The MQTT sensor's configuration keys (sensor.mqtt docs) this checker accepts.
SENSOR_KEYS = {
    "name", "unique_id", "state_topic", "value_template", "availability_topic", "availability",
    "availability_mode", "payload_available", "payload_not_available", "device", "origin",
    "device_class", "state_class", "unit_of_measurement", "icon", "json_attributes_topic",
    "json_attributes_template", "last_reset_value_template", "suggested_display_precision",
    "expire_after", "force_update", "qos", "enabled_by_default", "entity_category", "object_id",
    "default_entity_id", "encoding", "options", "platform",
}
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version",
               "hw_version", "serial_number", "suggested_area", "via_device", "configuration_url"}


def _topic_ok(topic: object) -> bool:
    return isinstance(topic, str) and bool(topic) and not any(c in topic for c in "+#\x00")


def problems(topic: str, config: dict) -> list[str]:
    found: list[str] = []
    if not DISCOVERY_TOPIC.match(topic):
        found.append(f"discovery topic {topic!r} is not <prefix>/sensor/[<node_id>/]<object_id>/config")
    unknown = set(config) - SENSOR_KEYS
    if unknown:
        found.append(f"unknown keys {sorted(unknown)}")
    if not _topic_ok(config.get("state_topic")):
        found.append("state_topic is required and must be a topic without wildcards")
    for key in ("availability_topic", "json_attributes_topic"):
        if key in config and not _topic_ok(config[key]):
            found.append(f"{key} must be a topic without wildcards")
    device = config.get("device")
    if device is not None:
        if not config.get("unique_id"):
            found.append("a device block needs a unique_id")
        if set(device) - DEVICE_KEYS:
            found.append(f"unknown device keys {sorted(set(device) - DEVICE_KEYS)}")
        if not (device.get("identifiers") or device.get("connections")):
            found.append("the device block needs identifiers or connections")
    dc, sc, unit = config.get("device_class"), config.get("state_class"), config.get("unit_of_measurement")
    if sc is not None and sc not in STATE_CLASSES:
        found.append(f"state_class {sc!r} is not one of {sorted(STATE_CLASSES)}")
    if dc in DEVICE_CLASS_STATE_CLASSES and sc is not None and sc not in DEVICE_CLASS_STATE_CLASSES[dc]:
        found.append(f"state_class {sc!r} is impossible for device_class {dc!r}")
    if dc in DEVICE_CLASS_UNITS and unit not in DEVICE_CLASS_UNITS[dc]:
        found.append(f"unit {unit!r} is not valid for device_class {dc!r}")
    if dc == "monetary" and not (isinstance(unit, str) and ISO_4217.match(unit)):
        found.append(f"a monetary sensor's unit is an ISO 4217 currency code, not {unit!r}")
    if dc is not None and dc not in DEVICE_CLASS_STATE_CLASSES and dc not in DEVICE_CLASS_UNITS \
            and dc != "monetary":
        found.append(f"device_class {dc!r} is not one this checker knows")
    if "last_reset_value_template" in config and sc != "total":
        found.append("last_reset is only valid with state_class total")
    return found


def state_problems(config: dict, value: object) -> list[str]:
    """A state against its config: numeric sensors (a device class, a state class or a unit) take
    numbers; a text sensor at most 255 characters."""
    numeric = any(config.get(k) for k in ("device_class", "state_class", "unit_of_measurement"))
    if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
        return [f"{config['name']}: numeric sensor got {value!r}"]
    if not numeric and (not isinstance(value, str) or len(value) > 255):
        return [f"{config['name']}: a text state is a string of at most 255 characters"]
    return []
