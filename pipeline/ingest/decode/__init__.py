"""Vendor payloads to readings. One decoder per format, each at the edge, all producing ``Reading``.

``decode`` never raises: anything that cannot become a valid reading becomes a ``DeadLetter``
carrying a code (pipeline.reasons), the reason and the raw payload, and the flow goes on. The
bounds of ValidationSettings are applied in order of cost: topic and ids, payload size, then the
parse (orjson: no recursion past 1024 levels, no number beyond a double), then nesting depth,
then the vendor decoder, then the reading's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from pipeline.ingest.decode.ack import decode_ack
from pipeline.ingest.decode.common import DecodeError
from pipeline.ingest.decode.native import decode_native
from pipeline.ingest.decode.shelly import ShellyDecoder
from pipeline.ingest.decode.tasmota import decode_tasmota
from pipeline.ingest.decode.zigbee2mqtt import decode_zigbee2mqtt
from pipeline.ingest.registry import Registry
from pipeline.ingest.validation import check_id, check_reading, check_ts
from pipeline.logs import get_logger
from pipeline.reasons import DeadLetterCode
from pipeline.records import CommandAck, DeadLetter, RawMessage, Reading
from pipeline.settings import ValidationSettings

log = get_logger(__name__)

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


def _storable(text: str) -> str:
    """Text every store accepts: lone surrogates (not UTF-8) and NUL (refused by PostgreSQL's text)
    written as escapes, so the dead letter still says what arrived."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _dead(msg: RawMessage, reason: str, code: DeadLetterCode | str) -> DeadLetter:
    error = code.value if isinstance(code, DeadLetterCode) else code
    # str()/repr(): the catch-all in decode must be able to dead-letter even a malformed message.
    payload = msg.payload if isinstance(msg.payload, (bytes, str)) else repr(msg.payload)
    return DeadLetter.of(msg.received_at, _storable(str(msg.topic)), payload, _storable(reason),
                         step="decode", error=error)


def _ids(kind: str, parts: list[str]) -> list[tuple[str, str]]:
    """The ids a topic carries: they become keys in state and in the store."""
    if kind.startswith(("native/", "ack/")):
        return [("home_id", parts[1]), ("device_id", parts[2])]
    if kind.startswith("shelly/"):
        return [("shelly id", parts[0])]
    if kind.startswith("tasmota/"):
        return [("tasmota topic", parts[1])]
    return [("zigbee2mqtt name", parts[1])]


def _too_deep(data: object, limit: int) -> bool:
    """Whether arrays/objects nest more than ``limit`` levels; iterative: no stack to overflow."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        # the data itself may be a scalar (a JSON string full of brackets): it has no children
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _parse(payload: bytes, settings: ValidationSettings) -> object:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise DecodeError(f"payload is not UTF-8 text: {bad.reason} at byte {bad.start}",
                              DeadLetterCode.NOT_UTF8) from None
        if str(exc).startswith("depth limit exceeded"):
            raise DecodeError(f"JSON nests deeper than {settings.max_json_depth} levels",
                              DeadLetterCode.TOO_DEEP) from None
        odd = b"NaN" in payload or b"Infinity" in payload
        hint = " (NaN and Infinity are not JSON)" if odd else ""
        raise DecodeError(f"invalid JSON: {exc}{hint}", DeadLetterCode.INVALID_JSON) from None
    # Counting brackets bounds the depth from above (brackets inside strings count too): the
    # walk is needed only when there are more of them than the limit.
    limit = settings.max_json_depth
    if (payload.count(b"[") + payload.count(b"{") > limit) and _too_deep(data, limit):
        raise DecodeError(f"JSON nests deeper than {limit} levels", DeadLetterCode.TOO_DEEP)
    return data


def decode(state: DecoderState | None, msg: RawMessage, registry: Registry,
           validation: ValidationSettings
           ) -> tuple[DecoderState | None, list[Reading | DeadLetter | CommandAck]]:
    try:
        return _decode(state, msg, registry, validation)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one message, not the flow
        log.warning("decode_failed", topic=str(msg.topic)[:200], error=type(exc).__name__,
                    detail=str(exc)[:200])
        return state, [_dead(msg, f"{DeadLetterCode.EXCEPTION.message}: "
                                  f"{type(exc).__name__}: {exc}", type(exc).__name__)]


def _decode(state: DecoderState | None, msg: RawMessage, registry: Registry,
            validation: ValidationSettings
            ) -> tuple[DecoderState | None, list[Reading | DeadLetter | CommandAck]]:
    kind = route_key(msg.topic)
    try:
        if kind is None:
            raise DecodeError(f"no decoder for topic {msg.topic[:200]!r}",
                              DeadLetterCode.UNKNOWN_TOPIC)
        parts = msg.topic.split("/")
        for what, value in _ids(kind, parts):
            violation = check_id(value, what, validation)
            if violation is not None:
                raise DecodeError(violation.reason, violation.code)
        if len(msg.topic) > validation.max_topic_chars:
            raise DecodeError(f"topic is {len(msg.topic)} characters long "
                              f"(limit {validation.max_topic_chars})", DeadLetterCode.TOO_LARGE)
        if len(msg.payload) > validation.max_payload_bytes:
            raise DecodeError(f"payload is {len(msg.payload)} bytes "
                              f"(limit {validation.max_payload_bytes})", DeadLetterCode.TOO_LARGE)
        data = _parse(msg.payload, validation)
        results: Sequence[Reading | DeadLetter | CommandAck]
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
            results = decode_tasmota(parts[1], data, msg.received_at, registry,
                                     lambda reason, code: _dead(msg, reason, code))
        else:
            results = list(decode_zigbee2mqtt(parts[1], data, msg.received_at, registry))
    except DecodeError as exc:
        return state, [_dead(msg, str(exc), exc.code)]
    out: list[Reading | DeadLetter | CommandAck] = []
    # A native reading's ids are the topic's, checked above; vendor ones come from the registry.
    ids_checked = kind.startswith("native/")
    for item in results:
        if isinstance(item, Reading):
            violation = check_reading(item, msg.received_at, validation, ids_checked)
        elif isinstance(item, CommandAck):
            violation = check_ts(item.ts, msg.received_at, validation)
        else:
            violation = None
        out.append(item if violation is None else _dead(msg, violation.reason, violation.code))
    return state, out
