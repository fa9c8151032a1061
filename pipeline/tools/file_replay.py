"""Publish a file to MQTT in time order, at a chosen speed."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from rich.progress import Progress

from pipeline.ingest.tabular import TableSpec, frame_to_readings, readings_frame
from pipeline.records import Reading


def schedule(event_ts: list[float], speed: float, start_wall: float,
             max_rate: float | None = None) -> list[float]:
    """Wall-clock send times: event-time gaps divided by ``speed`` (0 or inf: at once), and never
    more than ``max_rate`` messages a second."""
    if not event_ts:
        return []
    if speed == 0 or speed == float("inf"):
        times = [start_wall] * len(event_ts)
    else:
        first = event_ts[0]
        times = [start_wall + (t - first) / speed for t in event_ts]
    if max_rate:
        times = [max(t, start_wall + i / max_rate) for i, t in enumerate(times)]
    return times


def replay(path: str | Path, spec: TableSpec, publisher, speed: float, topic_prefix: str = "",
           progress: bool = True, shift_to_now: bool = False, limit: int | None = None,
           max_rate: float | None = None) -> int:
    """Publish a file's readings in time order; returns how many were published.

    With ``shift_to_now`` every time stamp moves by the same amount so the file ends now (at
    speed 0) or starts now (otherwise), which lets a replay feed a live flow's windows.
    ``max_rate`` bounds the publish rate: a broker drops QoS 1 messages for a subscriber that
    falls more than its queue limit behind (Mosquitto: 1000 by default), silently.
    """
    frame = readings_frame(path, spec)
    if limit is not None:
        frame = frame.head(limit)
    if frame.height == 0:
        return 0
    if shift_to_now:
        now = datetime.now(timezone.utc)
        # a non-empty datetime column: polars types its extremes as any literal
        anchor = cast(datetime, frame["ts"].max() if speed in (0, float("inf")) else frame["ts"].min())
        frame = frame.with_columns(frame["ts"] + (now - anchor))
    readings: list[Reading] = frame_to_readings(frame)
    times = schedule([r.ts.timestamp() for r in readings], speed, time.monotonic(), max_rate)
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"replaying {Path(path).name}", total=len(readings))
        for i, (reading, at) in enumerate(zip(readings, times)):
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publisher.publish_reading(reading, topic_prefix)
            if i % 1000 == 999:
                bar.update(task, advance=1000)
        bar.update(task, completed=len(readings))
    publisher.flush()
    return len(readings)
