"""A device that floods is held to its rate on its own clock (pipeline/ingest/flood.py); every
other device, and the same device's backlog after an outage, goes through untouched. Through the
per-device window step's logic as the flow runs it (flows/logic.py, DeviceWindowLogic: one per
device, its state snapshotted); the real flow's test is in tests/test_flow_hostile.py."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.logic import DeviceWindowLogic
from pipeline.ingest.flood import REPORT_EVERY
from pipeline.ingest.windowing import DeviceWindower
from pipeline.reasons import DeadLetterCode
from pipeline.records import DeadLetter, DeviceKind, DeviceWindow, Reading, Source
from pipeline.settings import FloodSettings, WindowSettings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
SMALL = FloodSettings(rate_per_s=2.0, burst=50)
WINDOWS = WindowSettings().event_time_only()


def _reading(ts: datetime, device: str = "plug", home: str = "h") -> Reading:
    return Reading(home, device, ts, 100.0, None, None, None, DeviceKind.APPLIANCE, Source.NATIVE)


def _step(flood: FloodSettings = SMALL, windower: DeviceWindower | None = None) -> DeviceWindowLogic:
    return DeviceWindowLogic(windower, WINDOWS, "test", lambda: True, flood)


def _run(step: DeviceWindowLogic, readings: list[Reading], batch: int = 500):
    """The device's readings in batches, as Bytewax hands them over; what the step sends on."""
    out: list[object] = []
    for start in range(0, len(readings), batch):
        emitted, _ = step.on_batch(readings[start:start + batch])
        out += list(emitted)
    stored = [x for x in out if isinstance(x, Reading)]
    letters = [x for x in out if isinstance(x, DeadLetter)]
    windows = [x for x in out if isinstance(x, DeviceWindow)]
    return stored, letters, windows


def test_a_device_at_its_usual_pace_loses_nothing():
    readings = [_reading(NOW - timedelta(seconds=10 * (500 - i))) for i in range(500)]
    stored, letters, windows = _run(_step(), readings, batch=7)
    assert stored == readings and letters == []
    assert sum(w.samples for w in windows) == 500 - 6  # all but the open minute's


def test_a_backlog_spread_over_its_hours_passes_at_once():
    # The broker kept 6 hours of a 1 s device while the flow was down: 21,600 readings at once,
    # far beyond the burst, but a second apart on the device's clock.
    start = NOW - timedelta(hours=6)
    readings = [_reading(start + timedelta(seconds=i)) for i in range(21_600)]
    stored, letters, _ = _run(_step(FloodSettings()), readings, batch=10_000)
    assert len(stored) == 21_600 and letters == []


def test_a_flood_on_one_clock_instant_is_held_to_the_burst_and_reported_once():
    step = _step()
    stored, letters, windows = _run(step, [_reading(NOW) for _ in range(2_000)])
    assert len(stored) == SMALL.burst
    assert len(letters) == 1
    letter = letters[0]
    assert letter.error == DeadLetterCode.RATE_LIMITED.value and letter.step == "windowing"
    assert letter.topic == "device:h/plug" and letter.payload.startswith('{"ts":"2026-12-03T12:00:00.000Z"')
    assert "h/plug sends more than 2 readings a second" in letter.reason
    assert letter.reason.endswith("; 1 refused since 2026-12-03 12:00:00 UTC")
    # the refused readings are not windowed either: the minute holds only what was stored
    step = _step()
    stored, _, _ = _run(step, [_reading(NOW + timedelta(milliseconds=i)) for i in range(2_000)])
    assert SMALL.burst <= len(stored) <= SMALL.burst + 2.0 * SMALL.rate_per_s  # 2 s of its clock earned 4
    _, _, windows = _run(step, [_reading(NOW + timedelta(minutes=2))])
    assert [w.samples for w in windows] == [len(stored)]


def test_a_flood_s_count_goes_on_in_its_dead_letters_and_ends_when_it_slows_down():
    flood = FloodSettings(rate_per_s=2.0, burst=5)
    step = _step(flood)
    stored, letters, _ = _run(step, [_reading(NOW) for _ in range(2 * REPORT_EVERY + 10)])
    assert len(stored) == 5
    assert [d.reason.split("; ")[1] for d in letters] == [
        f"{n:,} refused since 2026-12-03 12:00:00 UTC" for n in (1, REPORT_EVERY + 1, 2 * REPORT_EVERY + 1)]
    # back at one reading every 10 s of its clock: every reading passes
    later = [_reading(NOW + timedelta(seconds=10 * (i + 1))) for i in range(5)]
    stored, letters, _ = _run(step, later)
    assert stored == later and letters == []
    # and a new flood is reported from one again
    stored, letters, _ = _run(step, [_reading(NOW + timedelta(seconds=50))] * 20)
    assert letters and letters[0].reason.split("; ")[1] == "1 refused since 2026-12-03 12:00:50 UTC"


def test_repeats_and_time_stamps_from_the_past_earn_nothing():
    recent = [_reading(NOW - timedelta(seconds=100 - i)) for i in range(100)]
    old = [_reading(NOW - timedelta(seconds=500 + i)) for i in range(1_000)]
    stored, letters, _ = _run(_step(FloodSettings(rate_per_s=1.0, burst=100)), recent + old)
    assert len(stored) == 100 + 99 and len(letters) == 1  # the burst, then the 99 s it earned


def test_devices_have_budgets_of_their_own():
    flooding, quiet = _step(), _step()
    _run(flooding, [_reading(NOW, "stuck") for _ in range(500)])
    stored, letters, _ = _run(quiet, [_reading(NOW + timedelta(seconds=i), "meter") for i in range(40)])
    assert len(stored) == 40 and letters == []


def test_the_budget_survives_a_snapshot_and_a_state_from_before_it_windows_on():
    step = _step()
    _run(step, [_reading(NOW) for _ in range(60)])
    restored = _step(windower=pickle.loads(step.snapshot()))
    stored, letters, _ = _run(restored, [_reading(NOW)])
    assert stored == [] and letters == []  # still over its rate: counted, no new letter
    before = DeviceWindower(WINDOWS)
    state = before.__getstate__()
    del state["budget"]  # as snapshotted before the budget existed
    old = DeviceWindower.__new__(DeviceWindower)
    old.__setstate__(state)
    stored, _, _ = _run(_step(windower=old), [_reading(NOW)])
    assert len(stored) == 1


@settings(max_examples=300, deadline=None)
@given(gaps=st.lists(st.floats(min_value=-30, max_value=30, allow_nan=False), min_size=1, max_size=300),
       rate=st.floats(min_value=0.1, max_value=20), burst=st.integers(min_value=1, max_value=40),
       batch=st.integers(min_value=1, max_value=50))
def test_never_more_than_the_burst_plus_what_the_clock_earned(gaps, rate, burst, batch):
    ts, readings = NOW - timedelta(hours=1), []
    for gap in gaps:
        ts += timedelta(seconds=gap)
        readings.append(_reading(ts))
    stored, letters, _ = _run(_step(FloodSettings(rate_per_s=rate, burst=burst)), readings, batch)
    earned = (max(r.ts for r in readings) - readings[0].ts).total_seconds() * rate
    assert len(stored) <= burst + earned + 1e-6
    assert (len(stored) < len(readings)) == bool(letters)  # a refusal is never silent
    if all(g >= 1 / rate for g in gaps[1:]):  # at or under the rate: all pass
        assert stored == readings


def test_an_import_is_not_held_to_a_device_s_rate(tmp_path):
    """A file of 100 readings a second (a high-resolution meter's export) is history, not a device
    sharing the live flow: `shems import` stores every row."""
    from tests.test_import_hostile import shems

    rows = 6_000  # a minute at 100 Hz: a live device would pass 3,600 + 600
    start = NOW - timedelta(days=1)
    lines = ["ts,home_id,device_id,power_w"] + [
        f"{(start + timedelta(milliseconds=10 * i)).isoformat()},fast,meter,{100 + i % 7}" for i in range(rows)]
    path = tmp_path / "fast.csv"
    path.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    proc = shems("import", str(path), "--store-url", url, "--no-insights")
    assert proc.returncode == 0, proc.stderr
    from sinks.stores import open_store

    store = open_store(url)
    try:
        assert len(store.readings()) == rows
        assert not [d for d in store.dead_letters() if d.error == DeadLetterCode.RATE_LIMITED.value]
    finally:
        store.close()


def test_the_budget_flags_refuse_what_is_no_budget_in_one_line():
    from tests.test_import_hostile import shems

    for flag, value in (("--device-rate", "0"), ("--device-rate", "inf"), ("--device-rate", "1e9"),
                        ("--device-burst", "0"), ("--device-burst", "1.5")):
        proc = shems("run", flag, value)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and flag in lines[0] and value in lines[0], proc.stderr
