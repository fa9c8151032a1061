"""Thin Bytewax adapters: each wraps one pure, picklable state object from ``pipeline``.

Bytewax calls ``on_batch`` with all queued values of one key, ``on_notify`` when ``notify_at``
has passed, ``on_eof`` at the end of input, and ``snapshot`` for recovery. The adapters only
translate between those calls and the pure classes, and count what they see.

One record never ends the process: any exception a record raises in a step becomes a
``DeadLetter`` (the step, the exception class, a short reason, the raw payload or a bounded repr
of the record) and the step goes on. When a record fails, it is tried once more on a fresh state:
if it passes there, the key's state was what was broken, so that state is dead-lettered and
replaced; if it fails again, the record itself is bad. A state that raises in ``on_notify``,
``on_eof``, ``notify_at`` or ``snapshot`` is dead-lettered and reset the same way, so a poisoned
state cannot crash the worker twice. Each failing key is logged once.
"""

from __future__ import annotations

import os
import pickle
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Self

from bytewax.operators import StatefulBatchLogic

from pipeline import metrics
from pipeline.energy.tariff import TariffBook
from pipeline.ingest.decode import DecoderState, decode
from pipeline.ingest.flood import flood_reason, reported
from pipeline.ingest.home_total import HomeAggregator
from pipeline.ingest.registry import Registry
from pipeline.ingest.windowing import DeviceWindower
from pipeline.insights.step import HomeForecasts, HomeInsights, HourDue, InsightSettings
from pipeline.logs import get_logger
from pipeline.reasons import DeadLetterCode
from pipeline.records import (
    Anomaly,
    DeadLetter,
    DeviceWindow,
    Forecast,
    ForecastScore,
    HomeWindow,
    LateReading,
    RawMessage,
    Reading,
    Recommendation,
)
from pipeline.settings import FloodSettings, ValidationSettings, WindowSettings
from pipeline.tools.publisher import native_payload

log = get_logger(__name__)

RETAIN = StatefulBatchLogic.RETAIN
DISCARD = StatefulBatchLogic.DISCARD

# Test hook for the crash-loop guard (tests/test_spool_poison.py): a message whose payload contains
# this marker kills the process the way a segfault or the OOM killer would, which no guard here can
# catch. Only ever set by tests.
CRASH_MARKER_ENV = "SHEMS_TEST_CRASH_ON_PAYLOAD"
_CRASH_MARKER = os.environ.get(CRASH_MARKER_ENV, "").encode() or None

_REPR_MAX = 2048  # characters of a record's repr kept in its dead letter


def _now() -> datetime:
    return datetime.now(timezone.utc)


def bounded_repr(obj: object, limit: int = _REPR_MAX) -> str:
    """A prefix of ``repr(obj)`` that never raises (a dead letter must always be writable)."""
    try:
        text = repr(obj)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not stop the dead letter
        return f"<{type(obj).__name__}: repr failed with {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "\u2026"


def _state_view(state: object) -> object:
    """What a state holds, for a dead letter: its slots or attributes rather than an address."""
    getstate = getattr(state, "__getstate__", None)
    try:
        view = getstate() if getstate is not None else None
    except Exception:  # noqa: BLE001
        view = None
    if isinstance(view, dict):
        return view
    return getattr(state, "__dict__", state)


def record_topic(record: object) -> str:
    """The topic a dead letter is filed under: the message's topic, else ``home/device``."""
    if isinstance(record, RawMessage):
        return record.topic
    if isinstance(record, LateReading):
        record = record.reading
    home = getattr(record, "home_id", None)
    device = getattr(record, "device_id", None)
    if isinstance(home, str) and isinstance(device, str):
        return f"{home}/{device}"
    if isinstance(home, str):
        return home
    return f"<{type(record).__name__}>"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class _OncePerKey:
    """Remembers the most recent keys it was asked about, so a key's failures are logged once
    (a hostile device sending a thousand bad messages a second makes one log line, not a flood)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, step: str, key: str) -> bool:
        k = (step, key[:512])
        if k in self.seen:
            self.seen.move_to_end(k)
            return False
        self.seen[k] = None
        if len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        return True


_LOGGED = _OncePerKey()


def count_dead_letters(worker: str, items: Iterable[object]) -> None:
    counts = Counter(metrics.dead_letter_labels(d) for d in items if isinstance(d, DeadLetter))
    _count_labels(worker, counts)


def _count_labels(worker: str, counts: Counter) -> None:
    """``counts`` of ``(reason, step)`` labels into the two dead-letter counters."""
    steps: Counter = Counter()
    for (label, step), n in counts.items():
        metrics.DEAD_LETTERS.labels(worker=worker, reason=label).inc(n)
        steps[step] += n
    for step, n in steps.items():
        metrics.DEAD_LETTER_STEPS.labels(worker=worker, step=step).inc(n)


def record_failed(step: str, record: object, exc: BaseException) -> DeadLetter:
    """The dead letter for one record that raised in ``step`` (logged once per key)."""
    topic = record_topic(record)
    payload: bytes | str
    if isinstance(record, RawMessage):
        received, payload = record.received_at, record.payload
    else:
        received, payload = _now(), bounded_repr(record)
    reason = f"the {step} step failed on this record: {_short(exc)}"
    if _LOGGED.first(step, topic):
        log.warning("record_dead_lettered", step=step, topic=topic[:200], error=type(exc).__name__,
                    detail=_short(exc))
    return DeadLetter.of(received, topic, payload, reason, step=step, error=type(exc).__name__)


def state_reset(step: str, key: str, state: object, exc: BaseException, during: str) -> DeadLetter:
    """The dead letter for a key's state that raised (it is then replaced by a fresh one)."""
    reason = (f"the {step} state of this key raised in {during} and was reset (what it held is "
              f"lost from aggregates; stored readings are not): {_short(exc)}")
    if _LOGGED.first(f"{step}/state", key):
        log.error("state_reset", step=step, key=key[:200], during=during, error=type(exc).__name__,
                  detail=_short(exc))
    return DeadLetter.of(_now(), key, bounded_repr(_state_view(state)), reason, step=step,
                         error=type(exc).__name__)


def restored(step: str, resume: bytes | None) -> tuple[Any, DeadLetter | None]:
    """A key's state from its snapshot. One that cannot be read (a damaged recovery directory, a
    snapshot written by a newer version) would stop the flow at every start: it is dead-lettered
    instead, and the key starts afresh."""
    if resume is None:
        return None, None
    try:
        return pickle.loads(resume), None
    except Exception as exc:  # noqa: BLE001 - whatever unpickling raises is about this snapshot
        return None, state_reset(step, "?", f"<an unreadable snapshot of {len(resume)} bytes>", exc, "restore")


class _GuardedLogic(StatefulBatchLogic):
    """The guards every step shares (see the module docstring). Subclasses keep their state in
    ``self.state``, say how to make a fresh one, and handle one record at a time."""

    step = ""
    counts_own_dead_letters = True  # False where on_batch counts every dead letter it returns
    # Bytewax asks every touched key for a snapshot at each epoch, recovery or not; without a
    # recovery directory nobody reads them, and pickling every device's windows every epoch was
    # a tenth of the flow's time (profile in issue 13).
    snapshots = True

    def __init__(self, state, worker: str) -> None:
        self.state = state
        self.worker = worker
        # A state nothing has gone into yet: a record failing on it is bad on its own, and
        # whatever the failed attempt half-wrote is thrown away with it.
        self.pristine = state is None
        self.pending: list[object] = []  # dead letters from notify_at/snapshot, which cannot return any

    def fresh_state(self, record: object | None):
        """A new state for this key (None where the state is made lazily from the first record)."""
        raise NotImplementedError

    def unreadable(self, dead: DeadLetter | None) -> Self:
        """Report a snapshot :func:`restored` could not read, with this key's next outputs."""
        if dead is not None:
            self._count(dead)
            self.pending.append(dead)
        return self

    def state_key(self) -> str:
        return getattr(self.state, "home_id", "") or "?"

    def handle(self, record) -> Iterable[object]:
        """Feed one record to ``self.state``; returns what it emits."""
        raise NotImplementedError

    def run_records(self, records: Iterable[object]) -> list[object]:
        out: list[object] = self.pending
        self.pending = []
        for record in records:
            try:
                out.extend(self.handle(record))
                self.pristine = False
            except Exception as exc:  # noqa: BLE001 - one record never ends the process
                out.extend(self._recover(record, exc))
        return out

    def _recover(self, record, exc: Exception) -> list[object]:
        old = self.state
        try:
            fresh = self.fresh_state(record)
        except Exception:  # noqa: BLE001 - no state can be made for this record: it is bad
            return [self._record_failed(record, exc)]
        self.state = fresh
        if self.pristine:
            # It failed on a state nothing had gone into: the record is bad, and the fresh state
            # replaces whatever the failed attempt half-wrote.
            return [self._record_failed(record, exc)]
        try:
            results = list(self.handle(record))
        except Exception:  # noqa: BLE001 - it fails on a fresh state too: the record is bad
            self.state = old
            return [self._record_failed(record, exc)]
        # It passes on a fresh state: the key's state was what was broken.
        self.pristine = False
        dead = state_reset(self.step, record_topic(record), old, exc, "on_batch")
        self._count(dead)
        return [dead, *results]

    def _record_failed(self, record, exc: Exception) -> DeadLetter:
        dead = record_failed(self.step, record, exc)
        self._count(dead)
        return dead

    def _count(self, dead: DeadLetter) -> None:
        if self.counts_own_dead_letters:
            count_dead_letters(self.worker, [dead])

    def reset(self, exc: Exception, during: str) -> DeadLetter:
        dead = state_reset(self.step, self.state_key(), self.state, exc, during)
        self._count(dead)
        self.state = self.fresh_state(None)
        self.pristine = True
        return dead

    def guarded(self, during: str, call: Callable[[], list]) -> tuple[list, bool]:
        """``on_notify``/``on_eof`` of the state: a state that raises is dead-lettered and dropped."""
        out, self.pending = self.pending, []
        try:
            out.extend(call())
        except Exception as exc:  # noqa: BLE001
            out.append(self.reset(exc, during))
            return out, DISCARD
        return out, RETAIN

    def notify_at(self) -> datetime | None:
        try:
            return self.next_due()
        except Exception as exc:  # noqa: BLE001
            self.pending.append(self.reset(exc, "notify_at"))
            return None

    def next_due(self) -> datetime | None:
        return None

    def snapshot(self):
        if not self.snapshots:
            return None
        try:
            return self.dump()
        except Exception as exc:  # noqa: BLE001 - resumes from a fresh state instead
            self.pending.append(self.reset(exc, "snapshot"))
            return None

    def dump(self):
        return pickle.dumps(self.state)


class DecodeLogic(_GuardedLogic):
    """Per physical device: vendor state (e.g. Shelly's last full status) across messages."""

    step = "decode"
    counts_own_dead_letters = False

    def __init__(self, registry: Registry, validation: ValidationSettings, worker: str,
                 state: DecoderState | None) -> None:
        super().__init__(state, worker)
        self.registry = registry
        self.validation = validation
        self.topic = ""

    def fresh_state(self, record):
        return None  # decode makes what it needs

    def state_key(self) -> str:
        return self.topic or "?"

    def handle(self, msg: RawMessage):
        self.topic = msg.topic
        if _CRASH_MARKER is not None and _CRASH_MARKER in msg.payload:
            os._exit(1)
        self.state, results = decode(self.state, msg, self.registry, self.validation)
        return results

    def on_batch(self, values: list[RawMessage]) -> tuple[Iterable[object], bool]:
        out = self.run_records(values)
        count_decoded(self.worker, out)
        # No vendor state to keep (e.g. native devices): drop the key to bound memory.
        return out, DISCARD if self.state is None else RETAIN

    def dump(self) -> DecoderState | None:
        return pickle.loads(pickle.dumps(self.state))


def count_decoded(worker: str, out: list) -> None:
    """One counter update per label per batch, not per reading (the decode step is hot)."""
    sources: Counter = Counter()
    dead: Counter = Counter()
    for item in out:
        kind = type(item)
        if kind is Reading:
            sources[item.source] += 1
        elif kind is DeadLetter:
            dead[metrics.dead_letter_labels(item)] += 1
    for source, n in sources.items():
        metrics.READINGS_DECODED.labels(worker=worker, source=source.value).inc(n)
    if dead:
        _count_labels(worker, dead)


class StatelessDecoder:
    """Decodes a whole batch of messages of devices that keep no vendor state (native, acks,
    Tasmota, Zigbee2MQTT) in one call, without Bytewax's per-key routing, logic objects and
    snapshots: that per-key machinery cost more than the decoding itself. Same guards as the
    keyed step: what raises is dead-lettered, the batch goes on."""

    step = "decode"

    def __init__(self, registry: Registry, validation: ValidationSettings) -> None:
        self.registry = registry
        self.validation = validation

    def __call__(self, values: list[RawMessage]) -> list[Any]:
        registry, validation = self.registry, self.validation
        out: list[Any] = []
        for msg in values:
            try:
                if _CRASH_MARKER is not None and _CRASH_MARKER in msg.payload:
                    os._exit(1)
                out.extend(decode(None, msg, registry, validation)[1])
            except Exception as exc:  # noqa: BLE001 - one record never ends the process
                out.append(record_failed(self.step, msg, exc))
        count_decoded(metrics.worker_label(), out)
        return out


class DeviceWindowLogic(_GuardedLogic):
    """Per device: 1-minute event-time windows (see pipeline.ingest.windowing)."""

    step = "windowing"

    def __init__(self, windower: DeviceWindower | None, settings: WindowSettings, worker: str,
                 flush_on_eof: Callable[[], bool], flood: FloodSettings | None = None) -> None:
        super().__init__(windower, worker)
        self.settings = settings
        self.flood = flood  # None: no budget (an import: a file is not a device sharing the flow)
        self._refused = metrics.READINGS_RATE_LIMITED.labels(worker=worker)
        if windower is None:
            self.state = DeviceWindower(settings)
        self.flush_on_eof = flush_on_eof
        self.now = _now()
        # Labelled children looked up once: labels() costs more than the windowing of a reading.
        self._late = metrics.LATE_READINGS.labels(worker=worker)
        self._windows = metrics.WINDOWS_EMITTED.labels(worker=worker, level="device")

    @property
    def windower(self) -> DeviceWindower:
        return self.state

    def fresh_state(self, record) -> DeviceWindower:
        return DeviceWindower(self.settings)

    def state_key(self) -> str:
        return f"{self.state.home_id}/{self.state.device_id}"

    def _emit(self, output) -> list[DeviceWindow | LateReading]:
        out: list[DeviceWindow | LateReading] = list(output.windows)
        if output.late:
            self._late.inc(len(output.late))
            size = self.state.settings.window_s
            for r in output.late:
                epoch = int(r.ts.timestamp()) // size * size
                out.append(LateReading(r, datetime.fromtimestamp(epoch, timezone.utc)))
        if output.windows:
            self._windows.inc(len(output.windows))
        return out

    def handle(self, reading: Reading):
        refused = self.state.admit(reading, self.flood) if self.flood is not None else 0
        if refused:
            self._refused.inc()
            return [self._flood_letter(reading)] if reported(refused) else []
        # The reading goes on to the store from here: a refused one is neither stored nor windowed.
        return [*self._emit(self.state.add(reading, self.now)), reading]

    def _flood_letter(self, reading: Reading) -> DeadLetter:
        budget = self.state.budget
        assert budget is not None and self.flood is not None  # admit made it
        reason = flood_reason(reading.home_id, reading.device_id, budget, self.flood)
        return DeadLetter.of(self.now, f"device:{reading.home_id}/{reading.device_id}",
                             native_payload(reading), reason, step=self.step,
                             error=DeadLetterCode.RATE_LIMITED.value)

    def on_batch(self, values: list[Reading]):
        self.now = _now()
        return self.run_records(values), RETAIN

    def on_notify(self):
        return self.guarded("on_notify", lambda: self._emit(self.state.close_due(_now())))

    def on_eof(self):
        if not self.flush_on_eof():
            return self.guarded("on_eof", list)
        return self.guarded("on_eof", lambda: self._emit(self.state.flush()))

    def next_due(self) -> datetime | None:
        return self.state.next_due()


def _bucket_of(window: DeviceWindow | HomeWindow) -> datetime:
    return window.bucket


def _in_bucket_order(values: list) -> list:
    try:
        return sorted(values, key=_bucket_of)
    except Exception:  # noqa: BLE001 - an odd record is dead-lettered by the step, not here
        return list(values)


class HomeTotalLogic(_GuardedLogic):
    """Per home: the home's total from its meters, else the sum of its devices. The aggregator is
    made on the first window, when the home id (and whether the registry gives it a meter) is
    known: builders are not told the key."""

    step = "home_total"

    def __init__(self, aggregator: HomeAggregator | None, settings: WindowSettings,
                 meter_homes: frozenset[str], worker: str, flush_on_eof: Callable[[], bool]) -> None:
        super().__init__(aggregator, worker)
        self.settings = settings
        self.meter_homes = meter_homes
        self.flush_on_eof = flush_on_eof
        self.now = _now()
        self._windows = metrics.WINDOWS_EMITTED.labels(worker=worker, level="home")

    @property
    def aggregator(self) -> HomeAggregator | None:
        return self.state

    def fresh_state(self, record) -> HomeAggregator | None:
        if record is None:
            return None
        return HomeAggregator(self.settings, known_meter=record.home_id in self.meter_homes)

    def _emit(self, output):
        if output.windows:
            self._windows.inc(len(output.windows))
        return list(output.windows)

    def handle(self, window: DeviceWindow):
        if self.state is None:
            self.state = self.fresh_state(window)
        return self._emit(self.state.add(window, self.now))

    def on_batch(self, values: list[DeviceWindow]):
        self.now = _now()
        # A batch holds each device's windows one device after another (the per-device step emits
        # key by key): in bucket order, a meter's minutes are not judged late against an
        # appliance's later ones. The sort is stable, so a re-emitted bucket keeps its order.
        return self.run_records(_in_bucket_order(values)), RETAIN

    def on_notify(self):
        if self.state is None:
            return self.guarded("on_notify", list)
        return self.guarded("on_notify", lambda: self._emit(self.state.close_due(_now())))

    def on_eof(self):
        if self.state is None or not self.flush_on_eof():
            return self.guarded("on_eof", list)
        return self.guarded("on_eof", lambda: self._emit(self.state.flush()))

    def next_due(self) -> datetime | None:
        return None if self.state is None else self.state.next_due()


def device_window_builder(settings: WindowSettings, flush_on_eof: Callable[[], bool],
                          snapshots: bool = True, flood: FloodSettings | None = None):
    def build(resume: bytes | None) -> DeviceWindowLogic:
        windower, dead = restored(DeviceWindowLogic.step, resume)
        logic = DeviceWindowLogic(windower, settings, metrics.worker_label(), flush_on_eof,
                                  flood).unreadable(dead)
        logic.snapshots = snapshots
        return logic

    return build


def home_total_builder(settings: WindowSettings, meter_homes: frozenset[str],
                       flush_on_eof: Callable[[], bool], snapshots: bool = True):
    def build(resume: bytes | None) -> HomeTotalLogic:
        aggregator, dead = restored(HomeTotalLogic.step, resume)
        logic = HomeTotalLogic(aggregator, settings, meter_homes, metrics.worker_label(), flush_on_eof).unreadable(dead)
        logic.snapshots = snapshots
        return logic

    return build


class ForecastScoreBoard:
    """This worker's newest score per home and horizon, summed into the bounded-label gauges
    (``shems_forecast_mae_ratio`` per resolution and horizon, never per home)."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.latest: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}

    def update(self, scores: list[ForecastScore]) -> None:
        touched = set()
        for s in scores:
            key = (s.resolution_min, s.horizon_min)
            self.latest.setdefault(key, {})[s.home_id] = (s.mae_w, min(s.naive_day_mae_w, s.naive_week_mae_w))
            touched.add(key)
        for key in touched:
            homes = self.latest[key].values()
            mae = sum(m for m, _ in homes)
            naive = sum(n for _, n in homes)
            labels = dict(worker=self.worker, resolution=f"{key[0]}m", horizon=_horizon_label(key[1]))
            if naive > 0:
                metrics.FORECAST_MAE_RATIO.labels(**labels).set(mae / naive)
            metrics.FORECAST_MAE_WATTS.labels(**labels).set(mae / len(homes))


def _horizon_label(minutes: int) -> str:
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


_SCORE_BOARDS: dict[str, ForecastScoreBoard] = {}


class InsightsLogic(_GuardedLogic):
    """Per home: forecasts, anomalies and recommendations (see pipeline.insights.step)."""

    step = "insights"

    def __init__(self, registry: Registry, default_timezone: str, settings: InsightSettings,
                 book: TariffBook | None, live: bool, state: HomeInsights | None) -> None:
        super().__init__(state, metrics.worker_label())
        self.registry = registry
        self.default_timezone = default_timezone
        self.settings = settings
        self.book = book
        self.live = live  # wall-clock checks (silent meters) only in a live flow, not an import
        self.now: datetime | None = None
        self.scores = _SCORE_BOARDS.setdefault(self.worker, ForecastScoreBoard(self.worker))

    def fresh_state(self, record) -> HomeInsights | None:
        if record is None:
            return None
        home = record.home_id
        return HomeInsights(home, self.registry.home_timezone(home, self.default_timezone), self.settings)

    def handle(self, window: DeviceWindow | HomeWindow):
        if self.state is None:
            self.state = self.fresh_state(window)
        return self.state.add(window, self.book, self.now)

    def on_batch(self, values: list[DeviceWindow | HomeWindow]):
        self.now = _now() if self.live else None
        # Device and home minutes of one batch come key by key from the steps before: in bucket
        # order, every model sees time move forward.
        out = self.run_records(_in_bucket_order(values))
        self._count_outputs(out)
        return out, RETAIN

    def on_notify(self):
        if self.state is None:
            return self.guarded("on_notify", list)
        out, keep = self.guarded("on_notify", lambda: self.state.check(_now()))
        self._count_outputs(out)
        return out, keep

    def next_due(self) -> datetime | None:
        return self.state.next_due() if self.state is not None and self.live else None

    def _count_outputs(self, out: list) -> None:
        count_insights(self.worker, self.scores, out)


def count_insights(worker: str, scores: ForecastScoreBoard, out: list) -> None:
    """One counter update per label per batch (forecasts, anomalies, recommendations), and the
    newest scores into the worker's score board."""
    if not out:
        return
    counts: Counter[tuple[str, ...]] = Counter()
    new_scores = []
    for item in out:
        if isinstance(item, Forecast):
            counts[("forecast", str(item.resolution_min))] += 1
        elif isinstance(item, ForecastScore):
            new_scores.append(item)
        elif isinstance(item, Anomaly):
            counts[("anomaly", item.kind.value, "closed" if item.ended_at else "opened")] += 1
        elif isinstance(item, Recommendation):
            counts[("recommendation", item.kind)] += 1
    for key, n in counts.items():
        if key[0] == "forecast":
            metrics.FORECASTS_ISSUED.labels(worker=worker, resolution=f"{key[1]}m").inc(n)
        elif key[0] == "anomaly":
            metrics.ANOMALIES.labels(worker=worker, kind=key[1], event=key[2]).inc(n)
        else:
            metrics.RECOMMENDATIONS.labels(worker=worker, kind=key[1]).inc(n)
    if new_scores:
        scores.update(new_scores)


class ForecastsLogic(_GuardedLogic):
    """Per home: the hourly half of its forecaster, fed the hours the insights step closed. A
    key of its own step, so its state (most of a home's forecasting) is snapshotted only in the
    epochs an hour closes, not every minute."""

    step = "forecasts"

    def __init__(self, state: HomeForecasts | None) -> None:
        super().__init__(state, metrics.worker_label())
        self.scores = _SCORE_BOARDS.setdefault(self.worker, ForecastScoreBoard(self.worker))

    def fresh_state(self, record) -> HomeForecasts | None:
        return None if record is None else HomeForecasts.for_hour(record)

    def handle(self, due: HourDue):
        if self.state is None:
            self.state = self.fresh_state(due)
        return self.state.add(due)

    def on_batch(self, values: list[HourDue]):
        out = self.run_records(values)
        count_insights(self.worker, self.scores, out)
        return out, RETAIN


def forecasts_builder(snapshots: bool = True):
    def build(resume: bytes | None) -> ForecastsLogic:
        state, dead = restored(ForecastsLogic.step, resume)
        logic = ForecastsLogic(state).unreadable(dead)
        logic.snapshots = snapshots
        return logic

    return build


def insights_builder(registry: Registry, default_timezone: str, settings: InsightSettings,
                     book: TariffBook | None, live: bool, snapshots: bool = True):
    def build(resume: bytes | None) -> InsightsLogic:
        state, dead = restored(InsightsLogic.step, resume)
        logic = InsightsLogic(registry, default_timezone, settings, book, live, state).unreadable(dead)
        logic.snapshots = snapshots
        return logic

    return build
