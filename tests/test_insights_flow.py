"""Forecasts, anomalies and recommendations come out of the real flows into both stores, on real
data: sixteen days of REFIT House 2 (meter and four appliances) through `shems import`, and ten
days of its meter through the live MQTT flow, stopped and restarted with --recovery-dir."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from sinks.stores import open_store
from tests.conftest import FIXTURES
from tests.flowproc import FlowProcess, TestPublisher

ROOT = Path(__file__).resolve().parent.parent
REFIT_4W = FIXTURES / "refit_house2_4weeks_1min.parquet"
TARIFFS = ROOT / "deploy" / "tariffs.example.toml"
HOME = "refit-house2"


IMPORT_DAYS = 16  # a week of history for the week-ago baseline, then nine days scored


def _import(path: Path, store_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "import", str(path), "--layout", "wide",
         "--ts-col", "ts", "--home-id", HOME, "--tz", "Europe/London", "--tariffs", str(TARIFFS),
         "--device-cols", "aggregate_w=mains:meter,kettle_w=kettle,dishwasher_w=dishwasher,"
                          "washing_machine_w=washing_machine,microwave_w=microwave",
         "--store-url", store_url],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _insights(store_url: str) -> dict[str, list]:
    store = open_store(store_url)
    try:
        return {"forecasts": store.forecasts(), "scores": store.forecast_scores(),
                "anomalies": store.anomalies(),
                "recommendations": [r.recommendation for r in store.recommendations()]}
    finally:
        store.close()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Sixteen days imported into SQLite and into PostgreSQL (a database of its own)."""
    import psycopg

    from tests.conftest import PG_ADMIN_URL, _unique

    folder = tmp_path_factory.mktemp("insights")
    days = folder / "refit_house2_16days.parquet"
    frame = pl.read_parquet(REFIT_4W)
    frame.filter(pl.col("ts") < frame["ts"].min() + timedelta(days=IMPORT_DAYS)).write_parquet(days)
    sqlite_url = f"sqlite:///{folder / 'shems.db'}"
    name = _unique("shems_insights")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pg_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        _import(days, sqlite_url)
        _import(days, pg_url)
        yield _insights(sqlite_url), _insights(pg_url)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_import_forecasts_the_last_two_days_at_both_resolutions(imported):
    got, _ = imported
    first = pl.read_parquet(REFIT_4W)["ts"].min()
    newest = first + timedelta(days=IMPORT_DAYS, minutes=-1)
    made = sorted({f.made_at for f in got["forecasts"]})
    assert made and made[0] >= newest - timedelta(days=2) and len(made) >= 47  # hourly issues
    last = [f for f in got["forecasts"] if f.made_at == made[-1]]
    hourly = sorted(f.horizon_min for f in last if f.resolution_min == 60)
    quarter = sorted(f.horizon_min for f in last if f.resolution_min == 15)
    assert hourly == list(range(60, 1441, 60)) and quarter == list(range(15, 1441, 15))
    assert all(f.lower_w <= f.yhat_w <= f.upper_w and f.home_id == HOME for f in last)


def test_forecasts_are_scored_against_both_seasonal_baselines(imported):
    got, _ = imported
    scores = {(s.resolution_min, s.horizon_min): s for s in got["scores"]}
    day_ahead = scores[(60, 1440)]
    # The days after the first week are scored (the week-ago baseline needs a week of history).
    assert day_ahead.n > 7 * 24
    assert 0 < day_ahead.mae_w and 0 < day_ahead.naive_day_mae_w and 0 < day_ahead.naive_week_mae_w
    assert 0.5 <= day_ahead.coverage <= 1.0
    # An hour ahead the recent level is known: the model beats "same hour yesterday" clearly.
    hour_ahead = scores[(60, 60)]
    assert hour_ahead.mae_w < 0.9 * min(hour_ahead.naive_day_mae_w, hour_ahead.naive_week_mae_w)


def test_recommendations_name_money_saved_under_the_time_of_use_tariff(imported):
    got, _ = imported
    recs = {(r.kind, r.device_id): r for r in got["recommendations"]}
    shift = recs[("load_shift", "dishwasher")]
    assert shift.money_per_month > 0.5 and shift.currency == "GBP" and "kWh" in shift.detail
    assert ("standby_waste", "") in recs and recs[("standby_waste", "")].kwh_per_month > 1


def test_both_stores_hold_the_same_insights(imported):
    sqlite, postgres = imported
    for table in ("forecasts", "scores", "anomalies", "recommendations"):
        assert len(sqlite[table]) == len(postgres[table]), table
        assert sqlite[table] == postgres[table], table


def test_an_imported_power_cut_is_one_anomaly_of_the_home_and_a_lone_silence_the_devices(tmp_path):
    """Three days of House 2 through `shems import` (a real Bytewax run): every device quiet for
    three hours on day 2 (a power cut) is one SILENT of the home listing the five devices; the
    kettle alone quiet on day 3 is the kettle's."""
    frame = pl.read_parquet(REFIT_4W)
    t0 = frame["ts"].min()
    cut_at, alone_at = t0 + timedelta(days=1, hours=12), t0 + timedelta(days=2, hours=6)
    frame = (frame.filter((pl.col("ts") < t0 + timedelta(days=3))
                          & ~pl.col("ts").is_between(cut_at, cut_at + timedelta(hours=3), closed="left"))
             .with_columns(pl.when(pl.col("ts").is_between(alone_at, alone_at + timedelta(hours=2),
                                                           closed="left"))
                           .then(None).otherwise(pl.col("kettle_w")).alias("kettle_w")))
    path = tmp_path / "power_cut.parquet"
    frame.write_parquet(path)
    url = f"sqlite:///{tmp_path / 'shems.db'}"
    _import(path, url)
    silent = [a for a in _insights(url)["anomalies"] if a.kind.value == "silent"]
    limit = timedelta(minutes=30)  # a 1-minute device: the 30-minute floor
    assert [(a.device_id, a.started_at, a.ended_at) for a in silent] == [
        ("", cut_at + limit, cut_at + timedelta(hours=3)),
        ("kettle", alone_at + limit, alone_at + timedelta(hours=2))]
    home = silent[0].message
    assert home.startswith("Your home went quiet: 5 devices (")
    assert all(name in home for name in ("dishwasher", "kettle", "mains meter", "microwave",
                                         "washing machine"))


# ------------------------------------------------------------------------------ the live flow

def _meter_messages(days: float, step_min: int = 5) -> list[tuple[str, dict]]:
    """REFIT House 2's meter every ``step_min`` minutes over ``days`` days, moved to end a few
    minutes ago (the week-ago baseline needs more than a week before anything is scored)."""
    frame = (pl.read_parquet(REFIT_4W).select("ts", "aggregate_w").drop_nulls()
             .head(int(days * 1440)).gather_every(step_min))
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    shift = end - frame["ts"].max()
    shift -= timedelta(seconds=shift.total_seconds() % 3600)  # keep local hours on the hour
    return [(f"shems/{HOME}/mains/reading",
             {"ts": (ts + shift).isoformat(), "power_w": float(p), "kind": "meter"})
            for ts, p in frame.iter_rows()]


def _run_flow(store_url, mqtt_url, prefix, messages, recovery: Path | None, stop_after: int | None):
    extra = ["--timezone", "Europe/London"] + (["--recovery-dir", str(recovery)] if recovery else [])
    flow = FlowProcess(mqtt_url, store_url, prefix, extra_args=extra)
    pub = TestPublisher()
    parts = [messages] if stop_after is None else [messages[:stop_after], messages[stop_after:]]
    for i, part in enumerate(parts):
        flow.start(idle_exit=5 if i == len(parts) - 1 else None)
        for n, (topic, payload) in enumerate(part, start=1):
            pub.publish(prefix + topic, payload)
            if n % 50 == 0:  # 500/s: the broker's queue for the flow (1000 by default) never fills
                time.sleep(0.1)
        pub.flush()
        if i < len(parts) - 1:
            time.sleep(2.0)
            flow.stop()  # SIGTERM: with recovery, state is kept in the snapshot
    pub.close()
    flow.wait()


def test_a_restarted_flow_keeps_its_learned_models(tmp_path, mqtt_url, topic_prefix):
    """The same ten days through an uninterrupted flow and through one stopped after five: the
    restarted flow's models carry on (its scores equal the uninterrupted ones), rather than
    starting again untrained."""
    messages = _meter_messages(10)
    through = f"sqlite:///{tmp_path / 'through.db'}"
    restarted = f"sqlite:///{tmp_path / 'restarted.db'}"
    _run_flow(through, mqtt_url, topic_prefix + "a/", messages, None, None)
    _run_flow(restarted, mqtt_url, topic_prefix + "b/", messages, tmp_path / "recovery",
              stop_after=len(messages) // 2)
    a, b = _insights(through), _insights(restarted)
    scores_a = {(s.resolution_min, s.horizon_min): s for s in a["scores"]}
    scores_b = {(s.resolution_min, s.horizon_min): s for s in b["scores"]}
    assert scores_a[(60, 60)].n > 24  # the days after the first week are scored
    for key, s in scores_a.items():
        assert (scores_b[key].n, scores_b[key].mae_w) == pytest.approx((s.n, s.mae_w)), key
    last = max(f.made_at for f in a["forecasts"])
    assert ([f.yhat_w for f in a["forecasts"] if f.made_at == last]
            == pytest.approx([f.yhat_w for f in b["forecasts"] if f.made_at == last]))
