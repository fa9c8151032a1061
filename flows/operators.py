"""The ingest flow's composite operators (Bytewax ``@operator``), each with typed output streams.

    decode_messages: RawMessage -> readings | dead letters | command acks (per physical device)
    aggregate:       readings -> device minutes | late readings | home minutes | dead letters
    derive_insights: device and home minutes -> anomalies, recommendations, hours due (per home)
                     hours due -> forecasts, scores (per home, a step of its own)
                     | dead letters

None of them touches a store or a broker: the flow (flows/ingest.py) merges their outputs into
the store sink, so each can be run in process with ``bytewax.testing`` and a test sink.

Bytewax names an inner step ``<flow>.<operator>.<step>``, and recovery snapshots are filed under
those ids: a snapshot written before a step moved into an operator is renamed at start
(``flows.snapshot_compat.rename_steps``, from :data:`MOVED_STEPS`), or its state would be dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from flows.logic import (
    DecodeLogic,
    StatelessDecoder,
    device_window_builder,
    forecasts_builder,
    home_total_builder,
    insights_builder,
)
from pipeline import metrics
from pipeline.energy.tariff import TariffBook
from pipeline.ingest.decode import route_key
from pipeline.ingest.registry import Registry
from pipeline.insights.step import HourDue, Insight, InsightSettings
from pipeline.records import (
    CommandAck,
    DeadLetter,
    DeviceWindow,
    Forecast,
    HomeWindow,
    LateReading,
    RawMessage,
    Reading,
)
from pipeline.settings import FloodSettings, ValidationSettings, WindowSettings

# Where each stateful step's snapshots were filed before it moved into an operator (the flow id
# is added by the caller): old step id -> operator and step it lives in now.
MOVED_STEPS: dict[str, str] = {
    "decode": "decode_messages.decode",
    "device_windows": "aggregate.device_windows",
    "home_totals": "aggregate.home_totals",
    "insights": "derive_insights.insights",
}

# Stateful steps added after the move, which never had another id: nothing to rename.
NEW_STEPS: tuple[str, ...] = ("derive_insights.forecasts",)

_UNROUTABLE = "unroutable"  # topics no decoder claims still pass through decode to be dead-lettered

# Key functions must return a key: one that cannot read its record sends it to a key of its own,
# where the step's guard dead-letters it (see flows/logic.py), rather than raising.
_UNKEYABLE = "\x1funkeyable"


def _device_key(reading: Reading) -> str:
    try:
        return f"{reading.home_id}\x1f{reading.device_id}"
    except Exception:  # noqa: BLE001
        return _UNKEYABLE


def _home_key(window: DeviceWindow | HomeWindow | HourDue) -> str:
    try:
        return str(window.home_id)
    except Exception:  # noqa: BLE001
        return _UNKEYABLE


def _router(registry: Registry):
    """The key function: the registry names the topic layouts devices were set up with."""

    def _route(message: RawMessage) -> str:
        try:
            return route_key(message.topic, registry) or _UNROUTABLE
        except Exception:  # noqa: BLE001 - decode dead-letters what no decoder claims
            return _UNROUTABLE

    return _route


@dataclass(frozen=True)
class DecodeOut:
    readings: Stream[Reading]
    dead_letters: Stream[DeadLetter]
    acks: Stream[CommandAck]


def _keeps_state(route: Callable[[RawMessage], str]) -> Callable[[RawMessage], bool]:
    """Shelly's partial status updates need the device's last full status, and a Gen1 device's
    power message its last counter; nothing else keeps vendor state."""

    def keeps(message: RawMessage) -> bool:
        return route(message).startswith(_STATEFUL_ROUTES)

    return keeps


_STATEFUL_ROUTES = ("shelly/", "shelly1/")


def _is_reading(x: object) -> TypeGuard[Reading]:
    return type(x) is Reading


def _is_ack(x: object) -> TypeGuard[CommandAck]:
    return type(x) is CommandAck


@operator
def decode_messages(step_id: str, messages: Stream[RawMessage], registry: Registry,
                    validation: ValidationSettings, snapshots: bool = True) -> DecodeOut:
    """Decodes and validates messages; what fails becomes a dead letter with its reason. Messages
    of devices with vendor state (Shelly's last full status) are decoded per physical device in a
    keyed step; all others, a batch at a time without keys."""
    route = _router(registry)
    split_state = op.branch("stateful_or_not", messages, _keeps_state(route))
    routed = op.key_on("route", split_state.trues, route)

    def decode_builder(resume):
        logic = DecodeLogic(registry, validation, metrics.worker_label(), resume)
        logic.snapshots = snapshots
        return logic

    keyed = op.key_rm("decoded", op.stateful_batch("decode", routed, decode_builder))
    plain = op.flat_map_batch("decode_plain", split_state.falses, StatelessDecoder(registry, validation))
    decoded = op.merge("all_decoded", plain, keyed)
    split = op.branch("reading_or_dead_letter", decoded, _is_reading)
    rest = op.branch("ack_or_dead_letter", split.falses, _is_ack)
    return DecodeOut(split.trues, rest.falses, rest.trues)


@dataclass(frozen=True)
class AggregateOut:
    admitted: Stream[Reading]  # the readings within their device's rate, to store
    device_windows: Stream[DeviceWindow]
    late: Stream[LateReading]
    home_windows: Stream[HomeWindow]
    dead_letters: Stream[DeadLetter]


@operator
def aggregate(step_id: str, readings: Stream[Reading], window: WindowSettings,
              meter_home_ids: frozenset[str], flush_on_eof, snapshots: bool = True,
              flood: FloodSettings | None = None) -> AggregateOut:
    """Windows readings per device into minutes, then totals the minutes per home (from the
    home's meters, else the sum of its devices). ``flush_on_eof()`` says whether the open
    minutes are emitted as final at the end of input. The readings to store come out of the
    device step: a flooding device's readings over its rate do not (pipeline/ingest/flood.py)."""
    by_device = op.key_on("by_device", readings, _device_key)
    device_out = op.key_rm(
        "device_out",
        op.stateful_batch("device_windows", by_device,
                          device_window_builder(window, flush_on_eof, snapshots, flood)),
    )
    split = op.branch("window_or_other", device_out, lambda x: isinstance(x, DeviceWindow))
    kept = op.branch("reading_or_other", split.falses, _is_reading)
    # The steps' guards emit dead letters among their records.
    late_split = op.branch("late_or_dead_letter", kept.falses, lambda x: isinstance(x, LateReading))
    by_home = op.key_on("by_home", split.trues, _home_key)
    home_out = op.key_rm(
        "home_out",
        op.stateful_batch("home_totals", by_home,
                          home_total_builder(window, meter_home_ids, flush_on_eof, snapshots)),
    )
    home_split = op.branch("home_window_or_dead_letter", home_out, lambda x: isinstance(x, HomeWindow))
    dead = op.merge("dead_letters", late_split.falses, home_split.falses)
    return AggregateOut(kept.trues, split.trues, late_split.trues, home_split.trues, dead)


@dataclass(frozen=True)
class InsightsSetup:
    """What the per-home insights step needs besides the windows (configuration, not state)."""

    registry: Registry  # home time zones
    default_timezone: str
    book: TariffBook | None  # None: no tariff configured, so no recommendations
    live: bool  # wall-clock checks (silent meters); off when importing history
    settings: InsightSettings = field(default_factory=InsightSettings)
    # Per home: forecasts issued before its time are not stored (an import of years would store
    # millions of forecasts of the past); scores, anomalies and recommendations are. Per home
    # because homes of one file end on different days: one cut for the file would drop every
    # forecast of a home whose data end earlier. A home not named keeps all its forecasts.
    keep_forecasts_from: Mapping[str, datetime] | None = None
    snapshots: bool = True  # False without a recovery directory: nobody reads them


def _is_hour_due(x: object) -> TypeGuard[HourDue]:
    return type(x) is HourDue


@dataclass(frozen=True)
class InsightsOut:
    insights: Stream[Insight]
    dead_letters: Stream[DeadLetter]


@operator
def derive_insights(step_id: str, device_windows: Stream[DeviceWindow], home_windows: Stream[HomeWindow],
                    setup: InsightsSetup) -> InsightsOut:
    """Forecasts, scores, anomalies and recommendations per home from its device and home minutes.

    Two keyed steps, because a home's state changes at two rates and Bytewax snapshots a key's
    whole state in every epoch the key saw a record: ``insights`` (every minute: the detectors,
    the recommender, the minutes of the open hour) hands each closed hour to ``forecasts`` (once
    an hour: the forecasting history and models, half of the home's state)."""
    per_home = op.key_on("insights_by_home", op.merge("insight_inputs", device_windows, home_windows),
                         _home_key)
    builder = insights_builder(setup.registry, setup.default_timezone, setup.settings, setup.book,
                               setup.live, setup.snapshots)
    minutely = op.key_rm("insights_out", op.stateful_batch("insights", per_home, builder))
    hours_split = op.branch("hour_due_or_insight", minutely, _is_hour_due)
    hours_by_home = op.key_on("hours_by_home", hours_split.trues, _home_key)
    hourly = op.key_rm("forecasts_out",
                       op.stateful_batch("forecasts", hours_by_home, forecasts_builder(setup.snapshots)))
    found = op.merge("all_insights", hours_split.falses, hourly)
    if setup.keep_forecasts_from is not None:
        keep_from = setup.keep_forecasts_from

        def recent(x) -> bool:
            try:
                if not isinstance(x, Forecast):
                    return True
                cut = keep_from.get(x.home_id)
                return cut is None or x.made_at >= cut
            except Exception:  # noqa: BLE001 - let the store judge an odd forecast
                return True

        found = op.filter("recent_forecasts", found, recent)
    split = op.branch("insight_or_dead_letter", found, lambda x: not isinstance(x, DeadLetter))
    return InsightsOut(split.trues, split.falses)
