"""How long every viewer page takes to render with a year of 1-minute data for one home.

Loads the most recent 365 days of REFIT house 2 (mains + 4 appliances, 30-s samples averaged to
1-minute windows with polars, shifted to end now) into a fresh SQLite file and a fresh PostgreSQL
database through the stores' own ``write`` (one transaction per week), plus a time-of-use tariff,
a day of forecasts, scores, an anomaly and a recommendation. Then it runs each page in Streamlit's
AppTest (the whole script: session check, navigation, page) several times and prints the median
run time per page and store.

    .venv/bin/python tests/bench/bench_viewer.py [--runs 5] [--stores sqlite,postgres]

Reads /work/shared/data/refit/refit_houses2_20_30s.parquet (not shipped with the repository).

With ``--fleet N`` it measures the operator's side instead: a store with N homes of five devices
(``tests/fleet_seed.py``: a few hours of 1-minute windows, their hourly rollups, the last minutes of
readings, forecasts, anomalies, bulk-inserted), then the median time of each SQL statement the
Fleet page and the operator's sidebar run, of each data-layer call, and of the whole Fleet page in
AppTest (first page, a search, a later page).

    .venv/bin/python tests/bench/bench_viewer.py --fleet 10000 [--hours 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.records import (  # noqa: E402
    Anomaly,
    AnomalyKind,
    DeviceKind,
    DeviceWindow,
    Forecast,
    ForecastScore,
    HomeWindow,
    Reading,
    Recommendation,
    Source,
)
from sinks.base import Batch
from sinks.stores import open_store

REFIT = Path("/work/shared/data/refit/refit_houses2_20_30s.parquet")
HOME = "refit-house2"
DEVICES = {"aggregate_w": "mains", "kettle_w": "kettle", "dishwasher_w": "dishwasher",
           "washing_machine_w": "washing_machine", "microwave_w": "microwave"}
PG_ADMIN = os.environ.get("SHEMS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
APP = ROOT / "ui" / "app.py"
PAGES = [("Live", "views/live.py", "alice", {}), ("History (last 7 days)", "views/history.py", "alice", {}),
         ("History (a whole year)", "views/history.py", "alice", {"year": True}),
         ("Forecast", "views/forecast.py", "alice", {}), ("Alerts", "views/alerts.py", "alice", {}),
         ("Devices", "views/devices.py", "alice", {}), ("Fleet", "views/fleet.py", "olga", {}),
         ("Users", "views/users.py", "adam", {})]


def minutes(now: datetime) -> pl.DataFrame:
    """A year of 1-minute windows of REFIT house 2, ending at the minute before ``now``."""
    raw = pl.read_parquet(REFIT).filter((pl.col("house") == "REFIT_House2") & ~pl.col("aggregate_missing"))
    raw = raw.with_columns(pl.col("timestamp").dt.replace_time_zone(
        "Europe/London", ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
        .alias("ts")).drop_nulls("ts")
    end = raw["ts"].max()
    raw = raw.filter(pl.col("ts") > end - timedelta(days=365))
    long = raw.unpivot(index="ts", on=list(DEVICES), variable_name="column", value_name="power_w") \
        .with_columns(pl.col("column").replace_strict(DEVICES).alias("device_id"))
    per_minute = (long.group_by("device_id", pl.col("ts").dt.truncate("1m").alias("bucket"))
                  .agg(pl.col("power_w").mean().alias("mean"), pl.col("power_w").min().alias("lo"),
                       pl.col("power_w").max().alias("hi"), pl.len().alias("samples"))
                  .sort("bucket", "device_id"))
    shift = now.replace(second=0, microsecond=0) - timedelta(minutes=1) - per_minute["bucket"].max()
    shift = timedelta(minutes=shift // timedelta(minutes=1))
    return per_minute.with_columns(pl.col("bucket") + shift)


def load(url: str, frame: pl.DataFrame, now: datetime, console: Console) -> None:
    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    store = open_store(url)
    store.migrate()
    weeks = frame.with_columns(pl.col("bucket").dt.truncate("1w").alias("week")).partition_by(
        "week", maintain_order=True)
    with Progress(console=console) as bar:
        task = bar.add_task(f"loading {url.split('://')[0]}", total=frame.height)
        for week in weeks:
            batch = Batch()
            for device, bucket, mean, lo, hi, n in week.select(
                    "device_id", "bucket", "mean", "lo", "hi", "samples").iter_rows():
                kind = DeviceKind.METER if device == "mains" else DeviceKind.APPLIANCE
                batch.device_windows.append(DeviceWindow(HOME, device, kind, bucket, mean, lo, hi,
                                                         mean / 60, n))
                batch.readings.append(Reading(HOME, device, bucket, mean, kind=kind, source=Source.IMPORT))
                if kind is DeviceKind.METER:
                    batch.home_windows.append(HomeWindow(HOME, bucket, mean, lo, hi, mean / 60, n))
            store.write(batch)
            bar.advance(task, week.height)
    made = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    store.write(Batch(
        forecasts=[Forecast(HOME, made, made + timedelta(hours=i), 60, 60 * (i + 1), 450.0, 250.0,
                            800.0, "bench") for i in range(24)],
        forecast_scores=[ForecastScore(HOME, 60, 60 * h, "bench", 500, 120.0, 160.0, 170.0, 0.8, now)
                         for h in range(1, 25)],
        anomalies=[Anomaly(HOME, "kettle", AnomalyKind.LONG_RUNNING, now - timedelta(hours=1), None,
                           3.0, "The kettle has been on for 20 minutes.")],
        recommendations=[Recommendation(HOME, "", "standby_waste", now, "Cut the base load",
                                        "150 W always on.", 30.0, 8.0, "GBP")]))
    economy7 = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.TOU, "GBP", "Europe/London",
                      "Economy 7", 0.28, periods=(TouPeriod("night", 30, 450, 0.09),))
    store.upsert_tariffs(TariffBook("GBP", (economy7,)).to_rows())
    store.close()
    db = Database(url)
    accounts = Accounts(db)
    accounts.add_user("alice", "alice-secret-1", Role.HOMEOWNER, [HOME], by="bench")
    accounts.add_user("olga", "olga-secret-12", Role.OPERATOR, by="bench")
    accounts.add_user("adam", "adam-secret-123", Role.ADMIN, by="bench")
    db.close()


def page_times(url: str, runs: int, now: datetime) -> dict[str, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from ui.accounts import Accounts
    from ui.db import Database

    os.environ["SHEMS_STORE_URL"] = url
    db = Database(url, migrate=False)
    tokens = {u: Accounts(db).sign_in(u, p).token for u, p in
              (("alice", "alice-secret-1"), ("olga", "olga-secret-12"), ("adam", "adam-secret-123"))}
    db.close()
    out = {}
    for title, page, user, opts in PAGES:
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.session_state["session_token"] = tokens[user]
        at.query_params["home"] = HOME
        at.run()
        at.switch_page(page).run()  # warm: imports, the store's pool, page caches of the OS
        if opts.get("year"):
            at.date_input(key="history_range").set_value(((now - timedelta(days=364)).date(), now.date()))
            st.cache_data.clear()  # the first view groups the year's closed hours in SQL
            started = time.perf_counter()
            at.run()
            out[f"{title}, first view"] = time.perf_counter() - started
        assert not at.exception, [e.value for e in at.exception]
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - started)
        assert not at.exception and not at.error, [e.value for e in list(at.exception) + list(at.error)]
        out[title] = statistics.median(samples)
    st.cache_resource.clear()
    return out


class StatementTimer:
    """Times every statement the viewer runs (``ui.db.Transaction.frame``/``rows``, fetch
    included), keyed by its SQL, while installed."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self._saved: dict[str, object] = {}

    def __enter__(self) -> StatementTimer:
        from ui.db import Transaction

        for name in ("frame", "rows"):
            original = getattr(Transaction, name)
            self._saved[name] = original

            def timed(tx, sql, *args, _original=original, **kwargs):
                started = time.perf_counter()
                try:
                    return _original(tx, sql, *args, **kwargs)
                finally:
                    key = _statement_key(sql)
                    self.samples.setdefault(key, []).append(time.perf_counter() - started)

            setattr(Transaction, name, timed)
        return self

    def __exit__(self, *exc) -> None:
        from ui.db import Transaction

        for name, original in self._saved.items():
            setattr(Transaction, name, original)


def _statement_key(sql: str) -> str:
    """The statement with PostgreSQL's spellings of a time column and a time bucket folded into
    SQLite's, so both stores' timings of one query share a row."""
    import re

    sql = re.sub(r" INDEXED BY \w+", "", " ".join(sql.split()))
    sql = re.sub(r"\(floor\(extract\(epoch FROM (\S+?)\) / (\d+)\) \* \d+\)::bigint",
                 r"bucket(\1, \2 s)", sql)
    sql = re.sub(r"\(([\w.]+) - \1 % (\d+)000000\)", r"bucket(\1, \2 s)", sql)
    return re.sub(r"\(extract\(epoch FROM (.+?)\) \* 1000000\)::bigint", r"\1", sql)


def fleet_calls(db, principal, now: datetime, search: str) -> list[tuple[str, object]]:
    """The operator's data-layer calls, as the Fleet page and the sidebar make them."""
    from ui import data

    calls: list[tuple[str, object]] = [("homes_for (sidebar)", lambda: data.homes_for(db, principal))]
    if hasattr(data, "fleet_homes"):
        calls += [
            ("fleet (summary, demand, forecast, health)",
             lambda: data.fleet(db, principal, now, 120.0, 600.0)),
            ("fleet_homes page 1 (50, by kWh today)",
             lambda: data.fleet_homes(db, principal, now, 120.0, page=0, page_size=50)),
            ("fleet_homes page 100 (50, by kWh today)",
             lambda: data.fleet_homes(db, principal, now, 120.0, page=99, page_size=50)),
            (f"fleet_homes search {search!r}",
             lambda: data.fleet_homes(db, principal, now, 120.0, search=search, page_size=50)),
            ("fleet_homes search 'heat_pump' (device id)",
             lambda: data.fleet_homes(db, principal, now, 120.0, search="heat_pump", page_size=50)),
        ]
        if hasattr(data, "home_choices"):
            calls.append((f"home_choices {search!r} (sidebar search)",
                          lambda: data.home_choices(db, principal, search)))
        if hasattr(data, "fleet_savings"):
            calls.append(("fleet_savings (measured savings)", lambda: data.fleet_savings(db, principal)))
    else:
        calls.append(("fleet (everything)", lambda: data.fleet(db, principal, now, 120.0, 600.0)))
    return calls


def fleet_times(url: str, runs: int, now: datetime, homes: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per data-layer call and per SQL statement, and of the Fleet page."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import ui.common
    from tests.fleet_seed import home_id
    from ui.accounts import Accounts
    from ui.db import Database

    os.environ["SHEMS_STORE_URL"] = url
    os.environ["SHEMS_UI_STALE_AFTER_S"] = "120"
    # The pages' clock stops at the seed's: seeding 10,000 homes takes minutes, after which every
    # home would look stale and the live windows would be empty.
    ui.common.now = lambda: now
    db = Database(url)  # a kept SQLite store gains this checkout's migrations
    accounts = Accounts(db)
    principal = accounts.sign_in("olga", "olga-secret-12").principal
    search = home_id(homes // 2)[:-1]  # ten homes share this prefix
    out: dict[str, float] = {}
    with StatementTimer() as timer:
        for label, call in fleet_calls(db, principal, now, search):
            call()  # warm
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                call()
                samples.append(time.perf_counter() - started)
            out[label] = statistics.median(samples)
    statements = {sql: statistics.median(ts) for sql, ts in timer.samples.items()}
    token = accounts.sign_in("olga", "olga-secret-12").token
    db.close()
    # The page caches the fleet's totals and each page of homes for a few seconds (every click
    # reruns it): "first view" clears the caches before each run; each run of a click after it
    # asks for a page or a search not seen yet (totals cached, that page of homes not).
    views: list[tuple[str, list[dict], bool]] = [("page: Fleet, first view (nothing cached)", [{}] * runs, True)]
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.session_state["session_token"] = token
    at.run()
    at.switch_page("views/fleet.py").run()
    assert not at.exception, [e.value for e in at.exception]
    keys = {t.key for t in at.text_input}
    if "fleet_search" in keys:
        views += [(f"page: Fleet, a new search like {search!r}",
                   [{"fleet_search": home_id(homes // 2 + 10 * k)[:-1]} for k in range(runs)], False),
                  ("page: Fleet, a new page (20, 21, ...)",
                   [{"fleet_search": "", "fleet_page": 20 + k} for k in range(runs)], False)]
    for title, clicks, cold in views:
        samples = []
        for widgets in clicks:
            *first, last = list(widgets.items()) or [(None, None)]
            for key, value in first:  # one at a time: a new search goes back to the first page
                at.text_input(key=key).input(value)
                at.run()
            if last[0] == "fleet_page":
                at.number_input(key=last[0]).set_value(last[1])
            elif last[0] is not None:
                at.text_input(key=last[0]).input(last[1])
            if cold:
                st.cache_data.clear()
            started = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - started)
        assert not at.exception and not at.error, [e.value for e in list(at.exception) + list(at.error)]
        out[title] = statistics.median(samples)
    st.cache_resource.clear()
    return out, statements


def fleet_main(args, console: Console) -> int:
    from tests.fleet_seed import seed_fleet

    now = datetime.now(timezone.utc)
    results: dict[str, dict[str, float]] = {}
    statements: dict[str, dict[str, float]] = {}
    tmp = tempfile.TemporaryDirectory()
    for kind in args.stores.split(","):
        started = time.perf_counter()
        if kind == "sqlite":
            path = args.sqlite_path or Path(tmp.name) / "fleet.db"
            url = f"sqlite:///{path}"
            if path.exists():  # kept from an earlier run: its clock is its newest reading's
                import sqlite3

                with sqlite3.connect(path) as conn:
                    (newest,), = conn.execute("SELECT max(ts) FROM readings").fetchall()
                now = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=newest + 60_000_000)
            else:
                seed_fleet(url, args.fleet, args.hours, now)
            console.print(f"sqlite: seeded in {time.perf_counter() - started:.0f} s")
            results[kind], statements[kind] = fleet_times(url, args.runs, now, args.fleet)
        else:
            name = f"shems_bench_fleet_{os.getpid()}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
            try:
                seed_fleet(url, args.fleet, args.hours, now)
                console.print(f"postgres: seeded in {time.perf_counter() - started:.0f} s")
                results[kind], statements[kind] = fleet_times(url, args.runs, now, args.fleet)
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    title = (f"{args.fleet:,} homes, {args.fleet * 5:,} devices, {args.hours:g} h of minutes: "
             f"median of {args.runs} runs (s); target < 1 s")
    table = Table(title=title)
    table.add_column("call")
    for kind in results:
        table.add_column(kind, justify="right")
    for label in next(iter(results.values())):
        table.add_row(label, *(f"{results[k].get(label, float('nan')):.3f}" for k in results))
    console.print(table)
    table = Table(title="each SQL statement, median (s)")
    table.add_column("statement", overflow="fold")
    for kind in statements:
        table.add_column(kind, justify="right")
    for sql in next(iter(statements.values())):
        table.add_row(sql[:150], *(f"{statements[k].get(sql, float('nan')):.3f}" for k in statements))
    console.print(table)
    for kind, times in results.items():
        print(f"{kind}: " + ", ".join(f"{t}={v:.3f}s" for t, v in times.items()))
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleet", type=int, default=0, metavar="HOMES",
                        help="measure the Fleet page and operator queries with this many homes")
    parser.add_argument("--hours", type=float, default=3.0,
                        help="with --fleet: hours of 1-minute windows per device")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--sqlite-path", type=Path, default=None,
                        help="keep the SQLite store here (reused when it exists) instead of a temporary file")
    args = parser.parse_args()
    console = Console()
    if args.fleet:
        return fleet_main(args, console)
    if not REFIT.is_file():
        console.print(f"[red]missing {REFIT}")
        return 2
    now = datetime.now(timezone.utc)
    frame = minutes(now)
    console.print(f"{frame.height:,} device minutes ({frame['bucket'].min():%Y-%m-%d} to "
                  f"{frame['bucket'].max():%Y-%m-%d %H:%M} UTC) of {HOME}")
    results: dict[str, dict[str, float]] = {}
    tmp = tempfile.TemporaryDirectory()
    for kind in args.stores.split(","):
        if kind == "sqlite":
            path = args.sqlite_path or Path(tmp.name) / "bench.db"
            url = f"sqlite:///{path}"
            if not path.exists():
                load(url, frame, now, console)
            results[kind] = page_times(url, args.runs, now)
        else:
            name = f"shems_bench_viewer_{os.getpid()}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
            try:
                load(url, frame, now, console)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
                results[kind] = page_times(url, args.runs, now)
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    table = Table(title=f"page render time, median of {args.runs} AppTest runs (s); target < 1 s")
    table.add_column("page")
    for kind in results:
        table.add_column(kind, justify="right")
    for title in next(iter(results.values())):
        table.add_row(title, *(f"{results[k][title]:.3f}" for k in results))
    console.print(table)
    for kind, times in results.items():
        print(f"{kind}: " + ", ".join(f"{t}={v:.3f}s" for t, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
