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
from pipeline.ingest.decode.shelly_gen1 import ShellyGen1Decoder
from pipeline.ingest.decode.tasmota import decode_tasmota
from pipeline.ingest.decode.topics import DEFAULT_SUBSCRIPTIONS, route, subscriptions
from pipeline.ingest.decode.zigbee2mqtt import decode_zigbee2mqtt
from pipeline.ingest.registry import Registry
from pipeline.ingest.validation import check_id, check_reading, check_ts
from pipeline.logs import get_logger
from pipeline.reasons import DeadLetterCode
from pipeline.records import CommandAck, DeadLetter, RawMessage, Reading
from pipeline.settings import ValidationSettings

log = get_logger(__name__)

# Topic filters of the default layouts (under the deployment's topic prefix); the flow subscribes
# to ``subscriptions(registry)``, which adds the layouts the registry names.
SUBSCRIPTIONS: tuple[str, ...] = DEFAULT_SUBSCRIPTIONS + ("zigbee2mqtt/#",)

__all__ = ["SUBSCRIPTIONS", "DecoderState", "decode", "parse_payload", "route_key", "subscriptions"]


def route_key(topic: str, registry: Registry | None = None) -> str | None:
    """Groups the messages of one physical device, so its decoder state lives in one place."""
    found = route(topic, registry)
    return None if found is None else found.key


@dataclass
class DecoderState:
    """Per physical device; only Shelly needs any (its last full status per component, or a
    Gen1 device's last values per channel)."""

    shelly: ShellyDecoder = field(default_factory=ShellyDecoder)
    shelly1: ShellyGen1Decoder = field(default_factory=ShellyGen1Decoder)

    def gen1(self) -> ShellyGen1Decoder:
        # A state snapshotted before Gen1 support has no such attribute (Gen1 devices have keys
        # of their own, so this is belt and braces).
        if not hasattr(self, "shelly1"):
            self.shelly1 = ShellyGen1Decoder()
        return self.shelly1


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


def parse_payload(payload: bytes, settings: ValidationSettings) -> object:
    """JSON under the bounds every message gets (UTF-8, nesting, no NaN); DecodeError with its
    code otherwise. For other ways in (HTTP) that must judge a body as the flow judges a message."""
    return _parse(payload, settings)


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
    found = route(msg.topic, registry)
    try:
        if found is None:
            raise DecodeError(f"no decoder for topic {msg.topic[:200]!r}",
                              DeadLetterCode.UNKNOWN_TOPIC)
        if found.kind == "ignore":
            return state, []  # recognised: a bridge message, an attribute, a command, ...
        kind, parts = found.kind, found.parts
        for what, value in found.ids:
            # A Zigbee2MQTT friendly name may hold '/': each of its levels must be an id.
            for piece in (value.split("/") if kind == "zigbee2mqtt" else (value,)):
                violation = check_id(piece, what, validation)
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
        if kind == "ack":
            results = [decode_ack(parts[0], parts[1], data, msg.received_at)]
        elif kind == "native":
            results = [decode_native(parts[0], parts[1], data, msg.received_at)]
        elif kind == "shelly":
            state = state or DecoderState()
            if parts[1] == "events":
                results = state.shelly.on_rpc(parts[0], data, msg.received_at, registry,
                                              lambda reason, code: _dead(msg, reason, code))
            else:
                results = list(state.shelly.on_status(parts[0], parts[2], data, msg.received_at, registry))
        elif kind == "shelly_gen1":
            state = state or DecoderState()
            results = state.gen1().on_value(parts[0], parts[1], parts[2], parts[3], data,
                                            msg.received_at, registry)
        elif kind == "tasmota":
            results = decode_tasmota(parts[0], data, msg.received_at, registry,
                                     lambda reason, code: _dead(msg, reason, code))
        else:
            results = decode_zigbee2mqtt(parts[0], data, msg.received_at, registry,
                                         maybe_attribute=parts[1] == "maybe")
    except DecodeError as exc:
        return state, [_dead(msg, str(exc), exc.code)]
    out: list[Reading | DeadLetter | CommandAck] = []
    # A native reading's ids are the topic's, checked above; vendor ones come from the registry.
    ids_checked = kind == "native"
    for item in results:
        if isinstance(item, Reading):
            violation = check_reading(item, msg.received_at, validation, ids_checked)
        elif isinstance(item, CommandAck):
            violation = check_ts(item.ts, msg.received_at, validation)
        else:
            violation = None
        out.append(item if violation is None else _dead(msg, violation.reason, violation.code))
    return state, out
