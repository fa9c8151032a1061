"""emoncms's input API (``/input/post``, ``/input/bulk``) as readings, for devices that speak it
(emonTx/emonPi via emonhub, EmonESP, IoTaWatt, ESPHome, many meters).

Request parameters are emoncms's own (query string or form body, as emoncms reads either):

- ``/input/post``: ``node`` (or ``/input/post/<node>``; default ``0``), optional ``time`` (epoch
  seconds; default: arrival), and the inputs in ``fulljson`` (a JSON object), ``json`` (emoncms's
  lenient ``{power1:100,power2:200}``), ``csv`` or ``data``.
- ``/input/bulk``: ``data=[[t, node, v1, {"name": v2}, ...], ...]``; plain values are named 1, 2,
  ... by position, objects name their value. ``t`` is relative to a reference: ``sentat=S`` (the
  sender's clock when sending: ref = now - S), ``offset=O`` (ref = now + O, as emoncms's API page
  documents: with ``offset=-10`` an item at ``-6`` is 16 s ago), ``time=T`` (ref = T), or none
  (the last item is now: ref = now - t_last).

Inputs become readings by name, case-insensitive (``node`` becomes the device; a channel suffix,
digits or after ``_ - .``, becomes the device ``<node>:<channel>``):

================================================  ==========================================
``power``, ``watt(s)``, ``p``, ``w``               ``power_w`` (W) — the one required input
``energy``, ``wh``, ``e``                          ``energy_wh`` (a Wh counter)
``kwh``                                            ``energy_wh`` (kWh counter, times 1000)
``vrms``, ``voltage``, ``volt(s)``, ``v``          ``voltage_v`` (without a channel: every channel's)
``irms``, ``current``, ``amp(s)``, ``i``           ``current_a`` (per channel: CTs differ)
================================================  ==========================================

So ``{"power1":120,"E1":5012,"power2":30,"vrms":239}`` from node ``emontx`` is two readings,
``emontx:1`` (120 W, 5,012 Wh, 239 V) and ``emontx:2`` (30 W, 239 V). Inputs with other names
(``temp``, ``humidity``, ``rssi``, ``pulse``) are not metering and are left out; a node that sends
only those is answered ``ok`` with nothing stored. Metering that cannot become a reading (an
``E3`` without a ``power3``, positional csv values that have no names) is a dead letter, never
dropped without a trace. Positional values (csv, plain bulk values, which emonhub sends) can be
named per node by the operator (``NodeNames``: node ``10`` -> ``power1,power2,vrms``), as emoncms
users name inputs in emoncms; values beyond the names given are then not metering and left out.
A ``kind`` parameter (a shems extension) sets the devices' kind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import orjson

from pipeline.ingest.decode import parse_payload
from pipeline.ingest.decode.common import DecodeError
from pipeline.ingest.http_request import Outcome, dead_letter
from pipeline.ingest.validation import check_id, check_reading
from pipeline.reasons import DeadLetterCode
from pipeline.records import DeviceKind, Reading, Source
from pipeline.settings import TS_CEILING, TS_FLOOR, ValidationSettings

DEFAULT_NODE = "0"  # emoncms's node when none is given

_NAME = re.compile(
    r"^(?P<q>power|watts|watt|p|w|energy|kwh|wh|e|vrms|voltage|volts|volt|v|irms|current|amps|amp|i)"
    r"(?:(?P<n>\d+)|[_\-. ](?P<s>.+))?$",
    re.IGNORECASE,
)
_FIELD = {"power": "power_w", "watts": "power_w", "watt": "power_w", "p": "power_w", "w": "power_w",
          "energy": "energy_wh", "wh": "energy_wh", "e": "energy_wh", "kwh": "energy_kwh",
          "vrms": "voltage_v", "voltage": "voltage_v", "volts": "voltage_v", "volt": "voltage_v",
          "v": "voltage_v", "irms": "current_a", "current": "current_a", "amps": "current_a",
          "amp": "current_a", "i": "current_a"}
# emoncms's lenient "json" and "csv": it keeps only these characters, then splits on , and :
_LENIENT_DROP = re.compile(r"[^\w\s\-.:,]", re.UNICODE)


# Names of positional inputs per node, given by the operator: {"10": ("power1", "power2", "vrms")}.
NodeNames = Mapping[str, tuple[str, ...]]


def parse_node_names(spec: str) -> dict[str, tuple[str, ...]]:
    """``NODE=name1,name2,...;NODE2=...`` (an empty name skips a position) -> {node: names}."""
    out: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        node, sep, names = part.partition("=")
        parts = tuple(n.strip() for n in names.split(","))
        if not sep or not node.strip() or not any(parts):
            raise ValueError(f"expected NODE=name1,name2,...[;NODE=...] e.g. 10=power1,power2,vrms; "
                             f"got {part!r}")
        out[node.strip()] = parts
    return out


def classify(name: str) -> tuple[str, str] | None:
    """(field, channel) for a metering input name, None for any other input."""
    m = _NAME.match(name.strip())
    if m is None:
        return None
    channel = m.group("n") or (m.group("s") or "").strip().lower()
    return _FIELD[m.group("q").lower()], channel


def input_post(params: Mapping[str, str], node_in_path: str | None, home_id: str, where: str,
               received_at: datetime, validation: ValidationSettings,
               node_names: NodeNames | None = None) -> Outcome:
    out = Outcome()
    raw = _shown_params(params)
    try:
        kind = _kind(params)
        node = node_in_path if node_in_path is not None else params.get("node", DEFAULT_NODE)
        ts = _epoch(params["time"], "time") if params.get("time", "") != "" else received_at
        inputs = _post_inputs(params, validation)
    except DecodeError as exc:
        out.reject(dead_letter(received_at, where, raw, str(exc), exc.code), None)
        return out
    node_readings(out, None, home_id, node, inputs, ts, kind, where, raw, received_at, validation,
                  node_names)
    return out


def input_bulk(params: Mapping[str, str], home_id: str, where: str, received_at: datetime,
               validation: ValidationSettings, node_names: NodeNames | None = None) -> Outcome:
    out = Outcome()
    raw = _shown_params(params)
    try:
        kind = _kind(params)
        if params.get("data", "") == "":
            raise DecodeError("missing field data (the bulk items)", DeadLetterCode.MISSING_FIELD)
        data = parse_payload(params["data"].encode("utf-8", "surrogatepass"), validation)
        if not isinstance(data, list) or not data:
            raise DecodeError("data must be a non-empty JSON array of [time, node, values...] items")
        reference = _reference(params, data, received_at)
    except DecodeError as exc:
        out.reject(dead_letter(received_at, where, raw, str(exc), exc.code), None)
        return out
    for index, item in enumerate(data):
        at = f"{where}#{index}"
        item_raw = orjson.dumps(item)
        try:
            if not isinstance(item, list) or len(item) < 3:
                raise DecodeError("a bulk item is [time, node, value, ...] with at least one value")
            node = _scalar_text(item[1], "node")
            ts = _epoch(reference + _number(item[0], "item time"), "item time")
            inputs = _bulk_inputs(item[2:])
        except DecodeError as exc:
            out.reject(dead_letter(received_at, at, item_raw, str(exc), exc.code), index)
            continue
        node_readings(out, index, home_id, node, inputs, ts, kind, at, item_raw, received_at, validation,
                      node_names)
    return out


def node_readings(out: Outcome, index: int | None, home_id: str, node: str,
                  inputs: Mapping[str, object], ts: datetime, kind: DeviceKind, where: str,
                  raw: bytes | str, received_at: datetime, validation: ValidationSettings,
                  node_names: NodeNames | None = None) -> None:
    """One node's inputs at one time as readings (one per channel) added to ``out``."""
    def reject(reason: str, code: DeadLetterCode) -> None:
        out.reject(dead_letter(received_at, where, raw, reason, code), index)

    violation = check_id(node, "node", validation)
    if violation is not None:
        return reject(violation.reason, violation.code)
    named = (node_names or {}).get(node)
    if named is not None:
        # The operator named this node's positions; positions beyond (emonhub's rssi) are left out.
        inputs = {(named[int(k) - 1] if k.isdigit() and 0 < int(k) <= len(named) else
                   (k if not k.isdigit() else "")): v for k, v in inputs.items()}
        inputs.pop("", None)
    channels: dict[str, dict[str, float]] = {}
    positional: list[str] = []
    for name, value in inputs.items():
        found = classify(name)
        if found is None:
            if name.isdigit():
                positional.append(name)
            continue  # not metering (temperature, humidity, rssi, ...)
        field, channel = found
        number = _value(value)
        if number is None:
            return reject(f"input {name[:80]!r} must be a number, got {str(value)[:80]!r}",
                          DeadLetterCode.INVALID_PAYLOAD)
        if field == "energy_kwh":
            field, number = "energy_wh", number * 1000.0
        channels.setdefault(channel, {}).setdefault(field, number)
    if positional:
        return reject(f"inputs {', '.join(positional[:10])} have no names (csv or plain bulk "
                      "values): name them, e.g. fulljson={\"power1\":100}, or give the node's names "
                      "to shems http (--node-names NODE=power1,power2,...)",
                      DeadLetterCode.MISSING_FIELD)
    shared = channels.get("", {})
    powered = [ch for ch, fields in channels.items() if "power_w" in fields]
    orphans = [ch for ch in channels if ch and ch not in powered]
    if orphans:
        return reject(f"channel {orphans[0]!r} of node {node[:80]!r} has no power input "
                      f"(e.g. power{orphans[0]}) beside its other inputs", DeadLetterCode.MISSING_FIELD)
    if channels and not powered:
        return reject(f"node {node[:80]!r} sends metering but no power input "
                      "(name it power, P or W)", DeadLetterCode.MISSING_FIELD)
    for channel in powered:
        fields = channels[channel]
        reading = Reading(
            home_id=home_id,
            device_id=node if channel == "" else f"{node}:{channel}",
            ts=ts,
            power_w=fields["power_w"],
            energy_wh=fields.get("energy_wh"),
            voltage_v=fields.get("voltage_v", shared.get("voltage_v")),
            current_a=fields.get("current_a", shared.get("current_a") if channel == "" else None),
            kind=kind,
            source=Source.NATIVE,
        )
        problem = check_reading(reading, received_at, validation)
        if problem is not None:
            reject(f"{reading.device_id[:80]}: {problem.reason}", problem.code)
        else:
            out.readings.append(reading)
    return None


def _shown_params(params: Mapping[str, str]) -> str:
    """The request's parameters for the dead letter, without the key."""
    return "&".join(f"{k}={v}" for k, v in params.items() if k.lower() != "apikey")


def _kind(params: Mapping[str, str]) -> DeviceKind:
    value = params.get("kind", DeviceKind.APPLIANCE.value)
    try:
        return DeviceKind(value)
    except ValueError:
        raise DecodeError(f"kind {value[:40]!r} is not one of "
                          f"{', '.join(k.value for k in DeviceKind)}") from None


def _number(value: object, what: str) -> float:
    if isinstance(value, str):
        text = value
        try:
            value = float(text)
        except ValueError:
            raise DecodeError(f"{what} must be a number, got {text[:40]!r}",
                              DeadLetterCode.BAD_TIMESTAMP) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"{what} must be a number, got {type(value).__name__}",
                          DeadLetterCode.BAD_TIMESTAMP)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DecodeError(f"{what} is not a finite number", DeadLetterCode.BAD_TIMESTAMP)
    return number


def _epoch(value: object, what: str) -> datetime:
    seconds = _number(value, what)
    if not TS_FLOOR.timestamp() <= seconds < TS_CEILING.timestamp():
        code = (DeadLetterCode.TIMESTAMP_TOO_OLD if seconds < TS_FLOOR.timestamp()
                else DeadLetterCode.TIMESTAMP_IN_FUTURE)
        raise DecodeError(f"{what} {seconds:g} is outside [{TS_FLOOR:%Y-%m-%d}, "
                          f"{TS_CEILING:%Y-%m-%d}) as epoch seconds", code)
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)


def _reference(params: Mapping[str, str], data: list, received_at: datetime) -> float:
    """The epoch seconds bulk item times are relative to (see the module's docstring)."""
    now = received_at.timestamp()
    if params.get("sentat", "") != "":
        return now - _number(params["sentat"], "sentat")
    if params.get("offset", "") != "":
        return now + _number(params["offset"], "offset")
    if params.get("time", "") != "":
        return _number(params["time"], "time")
    last = data[-1]
    if not isinstance(last, list) or not last:
        raise DecodeError("the last bulk item has no time")
    return now - _number(last[0], "the last item's time")


def _scalar_text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DecodeError(f"{what} must be text or a number, got {type(value).__name__}",
                          DeadLetterCode.BAD_ID)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _value(value: object) -> float | None:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _post_inputs(params: Mapping[str, str], validation: ValidationSettings) -> dict[str, object]:
    if params.get("fulljson", "") != "" and params.get("json", "") == "":
        data = parse_payload(params["fulljson"].encode("utf-8", "surrogatepass"), validation)
        if not isinstance(data, dict):
            raise DecodeError(f"fulljson must be a JSON object, got {type(data).__name__}")
        return {str(k): v for k, v in data.items()}
    for name in ("json", "csv", "data"):
        if params.get(name, "") != "":
            return _lenient(params[name])
    raise DecodeError("the request holds no inputs (fulljson, json, csv or data)",
                      DeadLetterCode.MISSING_FIELD)


def _lenient(text: str) -> dict[str, object]:
    """emoncms's partial syntax: ``{power1:100,power2:200}`` or ``100,200``; a value without a
    name is named by its position (1, 2, ...)."""
    inputs: dict[str, object] = {}
    position = 0
    for pair in _LENIENT_DROP.sub("", text).split(","):
        key, sep, value = pair.partition(":")
        if sep:
            if not key.strip():
                raise DecodeError("an input has a value but no name")
            if _value(value) is None:
                raise DecodeError(f"input {key.strip()[:80]!r} is not a number: {value[:40]!r}")
            inputs[key.strip()] = value
        else:
            if _value(key) is None:
                raise DecodeError(f"csv value {key[:40]!r} is not a number")
            position += 1
            inputs[str(position)] = key
    return inputs


def _bulk_inputs(values: list) -> dict[str, object]:
    """Plain values are named by position (an empty one still takes its number, as in emoncms);
    an object names its first value."""
    inputs: dict[str, object] = {}
    position = 0
    for value in values:
        if isinstance(value, dict):
            for name, inner in list(value.items())[:1]:
                inputs[str(name)] = inner
            continue
        position += 1
        if value is None or value == "":
            continue
        inputs[str(position)] = value
    return inputs
