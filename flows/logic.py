"""Thin Bytewax adapters: each wraps one pure, picklable state object from ``pipeline``.

Bytewax calls ``on_batch`` with all queued values of one key, ``on_notify`` when ``notify_at``
has passed, ``on_eof`` at the end of input, and ``snapshot`` for recovery. The adapters only
translate between those calls and the pure classes, and count what they see.
"""

from __future__ import annotations

import pickle
from collections import Counter
from datetime import datetime, timezone
from typing import Callable, Iterable

from bytewax.operators import StatefulBatchLogic

from pipeline import metrics
from pipeline.decode import DecoderState, decode
from pipeline.home_total import HomeAggregator
from pipeline.insights import HomeInsights, InsightSettings
from pipeline.records import (Anomaly, CommandAck, DeadLetter, DeviceWindow, Forecast, ForecastScore,
                              HomeWindow, LateReading, RawMessage, Reading, Recommendation)
from pipeline.registry import Registry
from pipeline.settings import ValidationSettings, WindowSettings
from pipeline.tariff import TariffBook
from pipeline.windowing import DeviceWindower

RETAIN = StatefulBatchLogic.RETAIN
DISCARD = StatefulBatchLogic.DISCARD


def _now() -> datetime:
    return datetime.now(timezone.utc)


def reason_class(reason: str) -> str:
    """A bounded label for a free-text dead-letter reason (metrics must not explode in labels)."""
    r = reason.lower()
    for needle, label in (
        ("json", "invalid_json"),
        ("unregistered", "unregistered_device"),
        ("not registered", "unregistered_device"),
        ("unknown topic", "unknown_topic"),
        ("no decoder", "unknown_topic"),
        ("future", "future_timestamp"),
        ("finite", "not_finite"),
        ("bounds", "out_of_bounds"),
        ("outside", "out_of_bounds"),
        ("missing", "missing_field"),
    ):
        if needle in r:
            return label
    return "invalid_payload"


class DecodeLogic(StatefulBatchLogic):
    """Per physical device: vendor state (e.g. Shelly's last full status) across messages."""

    def __init__(self, registry: Registry, validation: ValidationSettings, worker: str,
                 state: DecoderState | None) -> None:
        self.registry = registry
        self.validation = validation
        self.state = state
        self.worker = worker

    def on_batch(self, values: list[RawMessage]
                 ) -> tuple[Iterable[Reading | DeadLetter | CommandAck], bool]:
        out: list[Reading | DeadLetter | CommandAck] = []
        for msg in values:
            self.state, results = decode(self.state, msg, self.registry, self.validation)
            out.extend(results)
        # One counter update per label per batch, not per reading (the decode step is hot).
        counts = Counter(("decoded", item.source.value) if isinstance(item, Reading)
                         else ("dead", reason_class(item.reason))
                         for item in out if not isinstance(item, CommandAck))
        for (what, label), n in counts.items():
            if what == "decoded":
                metrics.READINGS_DECODED.labels(worker=self.worker, source=label).inc(n)
            else:
                metrics.DEAD_LETTERS.labels(worker=self.worker, reason=label).inc(n)
        # No vendor state to keep (e.g. native devices): drop the key to bound memory.
        return out, DISCARD if self.state is None else RETAIN

    def snapshot(self) -> DecoderState | None:
        return pickle.loads(pickle.dumps(self.state))


class DeviceWindowLogic(StatefulBatchLogic):
    """Per device: 1-minute event-time windows (see pipeline.windowing)."""

    def __init__(self, windower: DeviceWindower, worker: str, flush_on_eof: Callable[[], bool]) -> None:
        self.windower = windower
        self.worker = worker
        self.flush_on_eof = flush_on_eof
        # Labelled children looked up once: labels() costs more than the windowing of a reading.
        self._late = metrics.LATE_READINGS.labels(worker=worker)
        self._windows = metrics.WINDOWS_EMITTED.labels(worker=worker, level="device")

    def _emit(self, output) -> list[DeviceWindow | LateReading]:
        out: list[DeviceWindow | LateReading] = list(output.windows)
        if output.late:
            self._late.inc(len(output.late))
            size = self.windower.settings.window_s
            for r in output.late:
                epoch = int(r.ts.timestamp()) // size * size
                out.append(LateReading(r, datetime.fromtimestamp(epoch, timezone.utc)))
        if output.windows:
            self._windows.inc(len(output.windows))
        return out

    def on_batch(self, values: list[Reading]):
        now = _now()
        out: list[DeviceWindow | LateReading] = []
        for reading in values:
            out.extend(self._emit(self.windower.add(reading, now)))
        return out, RETAIN

    def on_notify(self):
        return self._emit(self.windower.close_due(_now())), RETAIN

    def on_eof(self):
        if not self.flush_on_eof():
            return [], RETAIN
        return self._emit(self.windower.flush()), RETAIN

    def notify_at(self) -> datetime | None:
        return self.windower.next_due()

    def snapshot(self) -> bytes:
        return pickle.dumps(self.windower)


def _bucket_of(window: DeviceWindow | HomeWindow) -> datetime:
    return window.bucket


class HomeTotalLogic(StatefulBatchLogic):
    """Per home: the home's total from its meters, else the sum of its devices."""

    def __init__(self, aggregator: HomeAggregator, worker: str, flush_on_eof: Callable[[], bool]) -> None:
        self.aggregator = aggregator
        self.worker = worker
        self.flush_on_eof = flush_on_eof
        self._windows = metrics.WINDOWS_EMITTED.labels(worker=worker, level="home")

    def _emit(self, output):
        if output.windows:
            self._windows.inc(len(output.windows))
        return list(output.windows)

    def on_batch(self, values: list[DeviceWindow]):
        now = _now()
        out = []
        # A batch holds each device's windows one device after another (the per-device step emits
        # key by key): in bucket order, a meter's minutes are not judged late against an
        # appliance's later ones. The sort is stable, so a re-emitted bucket keeps its order.
        for window in sorted(values, key=_bucket_of):
            out.extend(self._emit(self.aggregator.add(window, now)))
        return out, RETAIN

    def on_notify(self):
        return self._emit(self.aggregator.close_due(_now())), RETAIN

    def on_eof(self):
        if not self.flush_on_eof():
            return [], RETAIN
        return self._emit(self.aggregator.flush()), RETAIN

    def notify_at(self) -> datetime | None:
        return self.aggregator.next_due()

    def snapshot(self) -> bytes:
        return pickle.dumps(self.aggregator)


def device_window_builder(settings: WindowSettings, flush_on_eof: Callable[[], bool]):
    def build(resume: bytes | None) -> DeviceWindowLogic:
        windower = pickle.loads(resume) if resume is not None else DeviceWindower(settings)
        return DeviceWindowLogic(windower, metrics.worker_label(), flush_on_eof)

    return build


def home_total_builder(settings: WindowSettings, meter_homes: frozenset[str],
                       flush_on_eof: Callable[[], bool]):
    def build(resume: bytes | None) -> HomeTotalLogic:
        # The key is not passed to builders; the first window tells the home (see HomeTotalLogic).
        aggregator = pickle.loads(resume) if resume is not None else None
        return _LazyHomeTotalLogic(
            settings, meter_homes, metrics.worker_label(), flush_on_eof, aggregator
        )

    return build


class _LazyHomeTotalLogic(HomeTotalLogic):
    """Builds the aggregator on the first window, when the home id (and registry meter) is known."""

    def __init__(self, settings, meter_homes, worker, flush_on_eof, aggregator) -> None:
        self.settings = settings
        self.meter_homes = meter_homes
        super().__init__(aggregator, worker, flush_on_eof)

    def on_batch(self, values: list[DeviceWindow]):
        if self.aggregator is None:
            home = values[0].home_id
            self.aggregator = HomeAggregator(self.settings, known_meter=home in self.meter_homes)
        return super().on_batch(values)

    def notify_at(self):
        return None if self.aggregator is None else self.aggregator.next_due()

    def on_notify(self):
        return ([], RETAIN) if self.aggregator is None else super().on_notify()

    def on_eof(self):
        return ([], RETAIN) if self.aggregator is None else super().on_eof()


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


class InsightsLogic(StatefulBatchLogic):
    """Per home: forecasts, anomalies and recommendations (see pipeline.insights)."""

    def __init__(self, registry: Registry, default_timezone: str, settings: InsightSettings,
                 book: TariffBook | None, live: bool, state: HomeInsights | None) -> None:
        self.registry = registry
        self.default_timezone = default_timezone
        self.settings = settings
        self.book = book
        self.live = live  # wall-clock checks (silent meters) only in a live flow, not an import
        self.state = state
        self.worker = metrics.worker_label()
        self.scores = _SCORE_BOARDS.setdefault(self.worker, ForecastScoreBoard(self.worker))

    def on_batch(self, values: list[DeviceWindow | HomeWindow]):
        if self.state is None:
            home = values[0].home_id
            self.state = HomeInsights(home, self.registry.home_timezone(home, self.default_timezone),
                                      self.settings)
        now = _now() if self.live else None
        out: list = []
        # Device and home minutes of one batch come key by key from the steps before: in bucket
        # order, every model sees time move forward.
        for window in sorted(values, key=_bucket_of):
            out.extend(self.state.add(window, self.book, now))
        self._count(out)
        return out, RETAIN

    def on_notify(self):
        out = self.state.check(_now()) if self.state is not None else []
        self._count(out)
        return out, RETAIN

    def notify_at(self) -> datetime | None:
        return self.state.next_due() if self.state is not None and self.live else None

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state)

    def _count(self, out: list) -> None:
        if not out:
            return
        counts = Counter()
        scores = []
        for item in out:
            if isinstance(item, Forecast):
                counts[("forecast", str(item.resolution_min))] += 1
            elif isinstance(item, ForecastScore):
                scores.append(item)
            elif isinstance(item, Anomaly):
                counts[("anomaly", item.kind.value, "closed" if item.ended_at else "opened")] += 1
            elif isinstance(item, Recommendation):
                counts[("recommendation", item.kind)] += 1
        for key, n in counts.items():
            if key[0] == "forecast":
                metrics.FORECASTS_ISSUED.labels(worker=self.worker, resolution=f"{key[1]}m").inc(n)
            elif key[0] == "anomaly":
                metrics.ANOMALIES.labels(worker=self.worker, kind=key[1], event=key[2]).inc(n)
            else:
                metrics.RECOMMENDATIONS.labels(worker=self.worker, kind=key[1]).inc(n)
        if scores:
            self.scores.update(scores)


def insights_builder(registry: Registry, default_timezone: str, settings: InsightSettings,
                     book: TariffBook | None, live: bool):
    def build(resume: bytes | None) -> InsightsLogic:
        state = pickle.loads(resume) if resume is not None else None
        return InsightsLogic(registry, default_timezone, settings, book, live, state)

    return build
