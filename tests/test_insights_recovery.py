"""A home's two insights steps under Bytewax recovery (a real in-process run, aborted and
resumed): what comes out is what an uninterrupted run gives, and the forecasts step, half of a
home's state, is snapshotted once an hour rather than in every epoch."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import logic
from flows.operators import InsightsSetup, derive_insights
from pipeline.energy.tariff import book_from_toml
from pipeline.ingest.registry import Registry
from pipeline.records import DeviceWindow, Forecast, HomeWindow
from pipeline.tools.bench_state import TARIFFS, TIMEZONE, _sample_day, home_windows

DAYS = 9  # long enough for scores (a week of history) and a daily recommendation evaluation
BATCH = 240  # windows per input batch, and with epoch_interval=0 an epoch each: 40 minutes of a home


def _flow(windows: list, sink: list) -> Dataflow:
    flow = Dataflow("insights_recovery")
    stream = op.input("windows", flow, TestingSource(windows, batch_size=BATCH))
    split = op.branch("device_or_home", stream, lambda w: isinstance(w, DeviceWindow))
    setup = InsightsSetup(Registry.empty(), TIMEZONE, book_from_toml(TARIFFS), live=False)
    out = derive_insights("derive_insights", split.trues, split.falses, setup)
    op.output("out", op.merge("all", out.insights, out.dead_letters), TestingSink(sink))
    return flow


def _run(windows: list, recovery: Path) -> list:
    sink: list = []
    run_main(_flow(windows, sink), epoch_interval=timedelta(0), recovery_config=RecoveryConfig(recovery))
    return sink


def _windows() -> list[DeviceWindow | HomeWindow]:
    return home_windows(3, DAYS, _sample_day())


def test_an_aborted_run_resumed_from_its_snapshots_gives_what_an_uninterrupted_one_does(tmp_path):
    windows = _windows()
    straight_dir, crashed_dir = tmp_path / "straight", tmp_path / "crashed"
    for d in (straight_dir, crashed_dir):
        d.mkdir()
        init_db_dir(d, 1)
    expected = _run(windows, straight_dir)
    kinds = {type(x).__name__ for x in expected}
    assert {"Forecast", "ForecastScore", "Recommendation"} <= kinds, kinds
    # Killed mid-hour on day 6 (the forecasts step has learnt for days by then), resumed: the
    # outputs since the last snapshot come again (the store is idempotent), none is lost or
    # different.
    at = 6 * 1440 * 6 + 6 * 37 + 3
    crashed = windows[:at] + [TestingSource.ABORT()] + windows[at:]
    got = _run(crashed, crashed_dir)
    got += _run(crashed, crashed_dir)
    assert set(got) == set(expected)
    assert len(got) >= len(expected)


def test_the_forecasts_step_is_snapshotted_once_an_hour(tmp_path, monkeypatch):
    counts = {"insights": 0, "forecasts": 0}

    def counting(step, original):
        def snapshot(self):
            counts[step] += 1
            return original(self)
        return snapshot

    monkeypatch.setattr(logic.InsightsLogic, "snapshot", counting("insights", logic.InsightsLogic.snapshot))
    monkeypatch.setattr(logic.ForecastsLogic, "snapshot", counting("forecasts", logic.ForecastsLogic.snapshot))
    windows = home_windows(4, 2, _sample_day())
    init_db_dir(tmp_path, 1)
    out = _run(windows, tmp_path)
    assert any(isinstance(x, Forecast) for x in out)
    hours = 2 * 24
    epochs = len(windows) // BATCH
    assert counts["insights"] >= epochs  # the home sent minutes in every epoch
    assert 0 < counts["forecasts"] <= hours + 1, counts  # once per closed hour (and at the end)


def test_an_unreadable_snapshot_is_a_dead_letter_and_the_home_starts_afresh(tmp_path):
    """A damaged recovery directory (or one written by a newer version) must not stop the flow at
    every start: the key whose snapshot cannot be read is dead-lettered and starts afresh."""
    import pickle
    import sqlite3

    from pipeline.records import DeadLetter

    windows = home_windows(6, 2, _sample_day())
    init_db_dir(tmp_path, 1)
    at = 1440 * 6 + 6 * 20
    crashed = windows[:at] + [TestingSource.ABORT()] + windows[at:]
    _run(crashed, tmp_path)
    [part] = tmp_path.glob("*.sqlite3")
    with sqlite3.connect(part) as db:
        damaged = db.execute("UPDATE snaps SET ser_change = ? WHERE step_id LIKE '%derive_insights.insights'",
                             (pickle.dumps(b"\x78\xbb\x00\x00\x00\x00damaged"),)).rowcount
    assert damaged >= 1
    resumed = _run(crashed, tmp_path)
    dead = [x for x in resumed if isinstance(x, DeadLetter)]
    assert len(dead) == 1 and "restore" in dead[0].reason and dead[0].step == "insights", dead
    # The home went on: its forecasts state was intact, and the minutes after the resume reach it.
    assert any(isinstance(x, Forecast) and x.made_at >= windows[at].bucket for x in resumed)
