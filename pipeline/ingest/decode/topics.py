"""Which decoder a topic belongs to, and which topics the flow subscribes to.

The default layouts are always heard; the registry adds the layouts users change:

* native ``shems/<home>/<device>/reading`` and ``.../ack``;
* Shelly Gen2/Gen3 ``<id>/events/rpc`` and ``<id>/status/<component>``;
* Shelly Gen1 ``shellies/<id>/relay/<N>/power|energy`` and ``shellies/<id>/emeter/<N>/<field>``
  (one number a message);
* Tasmota ``tele/<topic>/SENSOR``, plus the exact SENSOR topic of each registered device whose
  FullTopic or telemetry prefix differs (``%topic%/%prefix%/`` gives ``<topic>/tele/SENSOR``);
* Zigbee2MQTT ``<base>/<friendly name>`` under ``zigbee2mqtt`` and each base topic the registry
  names. A friendly name may contain ``/``, so ``<base>/#`` is heard and a registered name is
  matched whole; ``<base>/<name>/<attribute>`` (``output: attribute_and_json``), ``.../availability``,
  ``.../set``, ``.../get`` and ``<base>/bridge/...`` are recognised and carry nothing to store
  (the JSON state beside an attribute holds the same values).
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.ingest.registry import Registry

__all__ = ["DEFAULT_SUBSCRIPTIONS", "Route", "route", "subscriptions"]

DEFAULT_SUBSCRIPTIONS: tuple[str, ...] = (
    "shems/+/+/reading",
    "shems/+/+/ack",  # devices answering the viewer's commands (published on .../set)
    "+/events/rpc",
    "+/status/+",
    "shellies/+/relay/+/power",
    "shellies/+/relay/+/energy",
    "shellies/+/emeter/+/+",
    "tele/+/SENSOR",
)

# What a Zigbee2MQTT device's own sub-topics are for: none carries a measurement of its own.
_Z2M_NOT_STATE = frozenset({"availability", "set", "get"})


class Route(NamedTuple):
    kind: str  # native | ack | shelly | shelly_gen1 | tasmota | zigbee2mqtt | ignore
    key: str  # groups the messages of one physical device (its decoder state lives there)
    ids: tuple[tuple[str, str], ...]  # (what, value): checked as ids before decoding
    parts: tuple[str, ...]  # what the decoder needs from the topic


_EMPTY = Registry.empty()


def matches(topic_filter: str, topic: str) -> bool:
    """Whether an MQTT filter (``+`` one level, ``#`` the rest) matches a topic."""
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def subscriptions(registry: Registry | None = None) -> tuple[str, ...]:
    """The topic filters for this registry's layouts (under the deployment's topic prefix). A
    topic two filters match may be delivered twice (once per subscription), so a filter another
    one already covers is left out."""
    registry = registry or _EMPTY
    out = list(DEFAULT_SUBSCRIPTIONS)
    for extra in sorted(f"{base}/#" for base in registry.zigbee2mqtt_names()) + sorted(registry.tasmota_topics()):
        if not any(matches(f, extra.removesuffix("/#")) for f in out):
            out.append(extra)
    return tuple(out)


def _ignore(topic: str) -> Route:
    return Route("ignore", f"ignore/{topic}", (), ())


def _zigbee2mqtt(topic: str, registry: Registry) -> Route | None:
    for base, names in registry.zigbee2mqtt_names().items():
        if not topic.startswith(base + "/"):
            continue
        rest = topic[len(base) + 1:]
        if rest == "bridge" or rest.startswith("bridge/"):
            return _ignore(topic)
        if rest in names or "/" not in rest:
            return Route("zigbee2mqtt", f"zigbee2mqtt/{rest}", (("zigbee2mqtt name", rest),), (rest, ""))
        head, _, last = rest.rpartition("/")
        if head in names or last in _Z2M_NOT_STATE:
            return _ignore(topic)
        # An unregistered name with a '/', or an attribute of an unregistered device: decoded
        # as a state when it is a JSON object (so power from it is dead-lettered as
        # unregistered), else nothing to store.
        return Route("zigbee2mqtt", f"zigbee2mqtt/{rest}", (("zigbee2mqtt name", rest),), (rest, "maybe"))
    return None


def route(topic: str, registry: Registry | None = None) -> Route | None:
    """The decoder of ``topic`` and what it needs from it; None when no decoder claims it."""
    registry = registry or _EMPTY
    vendor = registry.tasmota_topics().get(topic)
    if vendor is not None:
        return Route("tasmota", f"tasmota/{vendor}", (("tasmota topic", vendor),), (vendor,))
    parts = topic.split("/")
    n = len(parts)
    if n == 4 and parts[0] == "shems" and parts[3] in ("reading", "ack"):
        kind = "native" if parts[3] == "reading" else "ack"
        return Route(kind, f"{kind}/{parts[1]}/{parts[2]}",
                     (("home_id", parts[1]), ("device_id", parts[2])), (parts[1], parts[2]))
    if n == 5 and parts[0] == "shellies" and parts[2] in ("relay", "emeter"):
        return Route("shelly_gen1", f"shelly1/{parts[1]}", (("shelly id", parts[1]),), tuple(parts[1:]))
    if n == 3 and parts[0] == "tele" and parts[2] == "SENSOR":
        return Route("tasmota", f"tasmota/{parts[1]}", (("tasmota topic", parts[1]),), (parts[1],))
    z2m = _zigbee2mqtt(topic, registry)
    if z2m is not None:
        return z2m
    if n == 3 and (parts[1:] == ["events", "rpc"] or parts[1] == "status"):
        return Route("shelly", f"shelly/{parts[0]}", (("shelly id", parts[0]),), tuple(parts))
    return None
