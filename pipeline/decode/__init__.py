"""Vendor payloads to readings. One decoder per format, each at the edge, all producing ``Reading``.

``decode`` never raises for bad input: anything that cannot become a valid reading becomes a
``DeadLetter`` carrying the reason and the raw payload, and the flow goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.decode.ack import decode_ack
from pipeline.decode.common import DecodeError
from pipeline.decode.native import decode_native
from pipeline.decode.shelly import ShellyDecoder
from pipeline.decode.tasmota import decode_tasmota
from pipeline.decode.zigbee2mqtt import decode_zigbee2mqtt
from pipeline.records import CommandAck, DeadLetter, RawMessage, Reading
from pipeline.registry import Registry
from pipeline.settings import ValidationSettings
from pipeline.validation import validate

# Topic filters the source subscribes to (under the deployment's topic prefix).
SUBSCRIPTIONS: tuple[str, ...] = (
    "shems/+/+/reading",
    "shems/+/+/ack",  # devices answering the viewer's commands (published on .../set)
    "+/events/rpc",
    "+/status/+",
    "tele/+/SENSOR",
    "zigbee2mqtt/+",
)

__all__ = ["SUBSCRIPTIONS", "DecoderState", "decode", "route_key"]


def route_key(topic: str) -> str | None:
    """Groups the messages of one physical device, so its decoder state lives in one place."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "shems" and parts[3] == "reading":
        return f"native/{parts[1]}/{parts[2]}"
    if len(parts) == 4 and parts[0] == "shems" and parts[3] == "ack":
        return f"ack/{parts[1]}/{parts[2]}"
    if len(parts) == 3 and (parts[1:] == ["events", "rpc"] or parts[1] == "status"):
        return f"shelly/{parts[0]}"
    if len(parts) == 3 and parts[0] == "tele" and parts[2] == "SENSOR":
        return f"tasmota/{parts[1]}"
    if len(parts) == 2 and parts[0] == "zigbee2mqtt":
        return f"zigbee2mqtt/{parts[1]}"
    return None


@dataclass
class DecoderState:
    """Per physical device; only Shelly needs any (its last full status per component)."""

    shelly: ShellyDecoder = field(default_factory=ShellyDecoder)


def _dead(msg: RawMessage, reason: str) -> DeadLetter:
    return DeadLetter.of(msg.received_at, msg.topic, msg.payload, reason)


def decode(state: DecoderState | None, msg: RawMessage, registry: Registry,
           validation: ValidationSettings
           ) -> tuple[DecoderState | None, list[Reading | DeadLetter | CommandAck]]:
    parts = msg.topic.split("/")
    kind = route_key(msg.topic)
    try:
        if kind is None:
            raise DecodeError(f"no decoder for topic {msg.topic!r}")
        try:
            text = msg.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"payload is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON: {exc}") from None
        results: list[Reading | DeadLetter | CommandAck]
        if kind.startswith("ack/"):
            results = [decode_ack(parts[1], parts[2], data, msg.received_at)]
        elif kind.startswith("native/"):
            results = [decode_native(parts[1], parts[2], data, msg.received_at)]
        elif kind.startswith("shelly/"):
            state = state or DecoderState()
            if parts[1] == "events":
                results = list(state.shelly.on_rpc(parts[0], data, msg.received_at, registry))
            else:
                results = list(state.shelly.on_status(parts[0], parts[2], data, msg.received_at, registry))
        elif kind.startswith("tasmota/"):
            results = decode_tasmota(parts[1], data, msg.received_at, registry, lambda r: _dead(msg, r))
        else:
            results = list(decode_zigbee2mqtt(parts[1], data, msg.received_at, registry))
    except DecodeError as exc:
        return state, [_dead(msg, str(exc))]
    out: list[Reading | DeadLetter | CommandAck] = []
    for item in results:
        if isinstance(item, Reading):
            reason = validate(item, msg.received_at, validation)
            if reason is not None:
                item = _dead(msg, reason)
        out.append(item)
    return state, out
