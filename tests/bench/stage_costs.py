"""CPU cost of each ingest stage, in microseconds per reading (for docs/SCALING.md).

Runs each stage of the flow on its own, in one process, on the readings `shems bench drain`
queues (native JSON, ``--devices`` devices, 5 per home, one reading per device every 10 s):

* client: a paho subscriber that only counts drains a queued backlog from a private Mosquitto
  (CPU seconds of that process: its network thread, PUBACKs, the callback);
* decode: ``StatelessDecoder`` (route, id and size bounds, orjson, validation, ``Reading``);
* windows: one ``DeviceWindower`` per device, then one ``HomeAggregator`` per home;
* insights: both insights states (``pipeline.insights.step.run_both``) for every device and home minute the windows produced
  (per reading: the minute's cost spread over the readings in it);
* sink: ``SqliteStore.write`` of the readings and windows in batches of 5,000 rows.

CPU time (``time.process_time``), not wall time, so a busy machine changes the figures less.

    .venv/bin/python -m tests.bench.stage_costs --readings 100000 --devices 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flows.logic import StatelessDecoder
from pipeline.ingest.home_total import HomeAggregator
from pipeline.ingest.registry import Registry
from pipeline.ingest.windowing import DeviceWindower
from pipeline.insights.step import HomeForecasts, HomeInsights, InsightSettings, run_both
from pipeline.records import DeviceWindow, HomeWindow, RawMessage, Reading
from pipeline.settings import ValidationSettings, WindowSettings
from pipeline.tools.bench import _payloads
from sinks.base import Batch
from sinks.sqlite import SqliteStore


def _cpu() -> float:
    return time.process_time()


def client_us(readings: int, devices: int) -> float:
    """CPU µs per message of a counting paho subscriber draining a queued backlog."""
    from pipeline.tools.bench_drain import _leave, _session, drain_raw
    from pipeline.tools.broker import start_private_broker
    from pipeline.tools.publisher import Publisher

    with start_private_broker(unlimited_queues=True) as broker:
        _leave(_session(broker.url, "stage-costs", ["stage/shems/#"]))
        publisher = Publisher(broker.url, qos=1)
        start = datetime.now(timezone.utc) - timedelta(days=1)
        for topic, payload in _payloads("stage/", devices, readings, start):
            publisher.publish_raw(topic, payload)
        publisher.close()
        return drain_raw(broker.url, "stage-costs", readings, 600)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--no-client", action="store_true", help="skip the broker measurement")
    args = parser.parse_args()
    n = args.readings
    start = (datetime.now(timezone.utc) - timedelta(days=1)).replace(microsecond=0)
    received = datetime.now(timezone.utc)
    messages = [RawMessage(topic, payload, received) for topic, payload in _payloads("", args.devices, n, start)]
    costs: dict[str, float] = {}
    if not args.no_client:
        costs["client"] = client_us(n, args.devices)

    decoder = StatelessDecoder(Registry.empty(), ValidationSettings())
    t = _cpu()
    decoded = [r for i in range(0, n, 10_000) for r in decoder(messages[i:i + 10_000])]
    costs["decode"] = (_cpu() - t) / n * 1e6
    readings = [r for r in decoded if isinstance(r, Reading)]
    assert len(readings) == n, f"{n - len(readings)} readings were dead-lettered"

    settings = WindowSettings().event_time_only()
    now = datetime.now(timezone.utc)
    windowers: dict[tuple[str, str], DeviceWindower] = {}
    device_windows: list[DeviceWindow] = []
    t = _cpu()
    for r in readings:
        w = windowers.get((r.home_id, r.device_id))
        if w is None:
            w = windowers[(r.home_id, r.device_id)] = DeviceWindower(settings)
        device_windows.extend(w.add(r, now).windows)
    for w in windowers.values():
        device_windows.extend(w.flush().windows)
    costs["device_windows"] = (_cpu() - t) / n * 1e6
    homes: dict[str, HomeAggregator] = {}
    home_windows: list[HomeWindow] = []
    t = _cpu()
    for dw in sorted(device_windows, key=lambda w: w.bucket):
        agg = homes.get(dw.home_id)
        if agg is None:
            agg = homes[dw.home_id] = HomeAggregator(settings, known_meter=False)
        home_windows.extend(agg.add(dw, now).windows)
    for agg in homes.values():
        home_windows.extend(agg.flush().windows)
    costs["home_totals"] = (_cpu() - t) / n * 1e6

    insights: dict[str, HomeInsights] = {}
    forecasts: dict[str, HomeForecasts | None] = {}
    found = 0
    windows = sorted([*device_windows, *home_windows], key=lambda w: w.bucket)
    t = _cpu()
    for win in windows:
        state = insights.get(win.home_id)
        if state is None:
            state = insights[win.home_id] = HomeInsights(win.home_id, "UTC", InsightSettings())
        out, forecasts[win.home_id] = run_both(state, forecasts.get(win.home_id), win, None, None)
        found += len(out)
    insight_cpu = _cpu() - t
    costs["insights"] = insight_cpu / n * 1e6
    costs["insights_per_window"] = insight_cpu / len(windows) * 1e6

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"sqlite:///{Path(tmp) / 'stage.db'}")
        store.migrate()
        t = _cpu()
        size = 5_000
        for i in range(0, n, size):
            store.write(Batch(readings=readings[i:i + size]))
        costs["sink_readings"] = (_cpu() - t) / n * 1e6
        t = _cpu()
        for i in range(0, len(device_windows), size):
            store.write(Batch(device_windows=device_windows[i:i + size]))
        store.write(Batch(home_windows=home_windows))
        costs["sink_windows"] = (_cpu() - t) / n * 1e6
        store.close()
    costs["windows_per_reading"] = len(windows) / n
    print(json.dumps({"readings": n, "devices": args.devices,
                      "us_per_reading": {k: round(v, 2) for k, v in costs.items()}}))


if __name__ == "__main__":
    main()
