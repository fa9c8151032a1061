"""Replay a readings frame through the flow's own operators, in-process, one home at a time.

    readings ─▶ DeviceWindower per device ─▶ HomeAggregator ─▶ HomeWindow minutes

The same pure state objects the Bytewax flow wraps (``flows/logic.py``), called directly: no
Bytewax, no broker, no store. Windows close on event time only, as in ``shems import`` (the
wall clock is never consulted), and everything still open is flushed at the end of the home's
readings. Used by ``shems evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import polars as pl

from pipeline.ingest.home_total import HomeAggregator
from pipeline.ingest.tabular import frame_to_readings
from pipeline.ingest.windowing import DeviceWindower
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow
from pipeline.settings import WindowSettings

_BATCH = 50_000


def split_homes(frame: pl.DataFrame, meters_only: bool = True) -> list[tuple[str, pl.DataFrame]]:
    """The frame per home, in time order. With ``meters_only``, a home that has a meter keeps
    only its meter readings: its total comes from the meter alone, so appliances change nothing."""
    out = []
    for (home,), part in sorted(frame.partition_by("home_id", as_dict=True).items()):
        if meters_only and (part["kind"] == DeviceKind.METER.value).any():
            part = part.filter(pl.col("kind") == DeviceKind.METER.value)
        out.append((str(home), part.sort("ts")))
    return out


def home_windows(readings: pl.DataFrame, window: WindowSettings | None = None,
                 on_rows: Callable[[int], None] = lambda n: None) -> Iterator[HomeWindow]:
    """One home's total minutes, in the order the flow would emit them (re-emissions included)."""
    window = (window or WindowSettings()).event_time_only()
    has_meter = bool((readings["kind"] == DeviceKind.METER.value).any())
    aggregator = HomeAggregator(window, known_meter=has_meter)
    windowers: dict[str, DeviceWindower] = {}

    def totals(device_windows: list[DeviceWindow], now) -> Iterator[HomeWindow]:
        for dw in device_windows:
            yield from aggregator.add(dw, now).windows

    for offset in range(0, readings.height, _BATCH):
        batch = frame_to_readings(readings.slice(offset, _BATCH))
        for reading in batch:
            windower = windowers.get(reading.device_id)
            if windower is None:
                windower = windowers[reading.device_id] = DeviceWindower(window)
            out = windower.add(reading, reading.ts)
            if out.windows:
                yield from totals(out.windows, reading.ts)
        on_rows(len(batch))
    for windower in windowers.values():
        flushed = windower.flush().windows
        if flushed:
            yield from totals(flushed, flushed[-1].bucket)
    yield from aggregator.flush().windows
