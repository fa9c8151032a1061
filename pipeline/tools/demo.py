"""`shems demo`: everything on embedded defaults, with live counts and a summary at the end.

First four bundled weeks of a real home are imported (`shems import`, shifted to end where the
replayed day begins), so forecasts, their scores, anomalies and recommendations are on the
viewer's first screen. A broker is started when none is reachable; the flow runs as a child
process (`shems run`) into SQLite; a bundled day of the same home is replayed (shifted so it ends now) and simulated
homes publish live readings beside it, obeying commands from the viewer (`shems ui`, a second
child process) for which a demo homeowner and a demo operator are created. The first simulated
home has a battery that obeys setpoints: once the flow has seen it, a day's plan for it is
proposed (`shems plan --propose`), and `shems execute` (a third child process) carries it out
when the homeowner accepts it on the viewer's Plan page.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import cast

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.tools.broker import ensure_broker, free_port
from pipeline.tools.invocation import shems_command
from pipeline.tools.ports import listen_problem
from sinks.base import TABLES
from sinks.stores import open_store

SAMPLE = Path(__file__).parents[1] / "data" / "sample_home.parquet"
SAMPLE_WEEKS = Path(__file__).parents[1] / "data" / "sample_home_4weeks.parquet"
SAMPLE_WEEKS_DEVICES = ("aggregate_w=mains:meter,kettle_w=kettle,dishwasher_w=dishwasher,"
                        "washing_machine_w=washing_machine,microwave_w=microwave")
DEMO_TARIFFS = Path(__file__).parents[1] / "data" / "demo_tariffs.toml"


def _counts_table(counts: dict[str, int], previous: dict[str, int], elapsed: float) -> Table:
    table = Table(title=f"shems demo — {elapsed:5.0f} s (Ctrl-C to stop)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("new/s", justify="right")
    for name in TABLES:
        now, before = counts.get(name, 0), previous.get(name, 0)
        table.add_row(name, f"{now:,}", f"{max(0, now - before):,}")
    return table


def _summary(store_url: str, console: Console) -> None:
    store = open_store(store_url)
    try:
        counts = store.counts()
        homes: dict[str, tuple[float, int, float]] = {}
        for w in store.home_windows():
            kwh, minutes, watts = homes.get(w.home_id, (0.0, 0, 0.0))
            homes[w.home_id] = (kwh + w.energy_wh / 1000, minutes + 1, watts + w.mean_power_w)
        dead = store.dead_letters()
    finally:
        store.close()
    table = Table(title="summary: energy per home (stored 1-minute aggregates)")
    table.add_column("home")
    table.add_column("minutes", justify="right")
    table.add_column("kWh imported", justify="right")
    # A home with PV exporting at midday imports nothing: its mean power says why.
    table.add_column("mean W (- = export)", justify="right")
    for home, (kwh, minutes, watts) in sorted(homes.items()):
        table.add_row(home, str(minutes), f"{kwh:.3f}", f"{watts / minutes:,.0f}")
    console.print(table)
    console.print(", ".join(f"{k}: {v:,}" for k, v in counts.items()))
    if dead:
        console.print(f"{len(dead)} dead letters, e.g. {dead[-1].reason!r}")


DEMO_HOMEOWNER = "demo-home"
DEMO_OPERATOR = "demo-operator"
SAMPLE_HOME = "refit-house2"
# The first simulated home's battery: what `shems plan` is told and what the simulator obeys.
DEMO_BATTERY = dict(capacity_kwh=5.0, power_kw=2.5, efficiency=0.9, soc=0.5)


def propose_battery_plan(store_url: str, home: str, stop: threading.Event, console: Console) -> None:
    """Wait until the flow has stored the home's battery, then propose a day's plan for it (the
    homeowner accepts it on the Plan page; the executor does nothing before that)."""
    from ui.db import Database

    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            db = Database(store_url)
            try:
                seen = db.rows("SELECT 1 FROM devices WHERE home_id = :h AND device_id = 'battery'", {"h": home})
                # A home new to the store has no forecast yet: its load so far stands in for one,
                # from its raw readings until its first home minute closes (two or three minutes
                # in, longer than a short demo may run): its meters' if it has any, else the sum
                # of its devices'.
                mean = db.rows("SELECT avg(mean_power_w) FROM home_1m WHERE home_id = :h", {"h": home})
                if not mean or mean[0][0] is None:
                    mean = db.rows(
                        "SELECT CASE WHEN max(meter) = 1 THEN sum(CASE WHEN meter = 1 THEN p END) ELSE sum(p) END "
                        "FROM (SELECT CASE WHEN d.kind = 'meter' THEN 1 ELSE 0 END AS meter, avg(r.power_w) AS p "
                        "FROM readings r JOIN devices d USING (home_id, device_id) "
                        "WHERE r.home_id = :h AND d.kind NOT IN ('battery', 'pv') GROUP BY r.device_id, d.kind) x",
                        {"h": home})
            finally:
                db.close()
        except Exception:  # the schema may not be there yet
            seen, mean = [], []
        if seen and mean and mean[0][0] is not None:
            break
        stop.wait(1.0)
    else:
        # The sign-in lines promised a plan: say why there is none and how to make one.
        console.print(f"no battery plan for {home}: the flow had not stored its battery and load yet; "
                      f"propose one later with `shems plan --home {home} --propose --battery ...` "
                      f"(`shems plan --help`)")
        return
    battery = ",".join(f"{k}={v:g}" for k, v in DEMO_BATTERY.items())
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "plan", "--home", home, "--store-url", store_url,
         "--tariffs", str(DEMO_TARIFFS), "--battery", battery, "--hours", "24", "--propose",
         "--base-load-w", f"{max(float(mean[0][0]), 0.0):.0f}",
         "--accepted-by", "shems demo"],
        capture_output=True, text=True)
    if done.returncode:
        console.print(f"[red]no battery plan for {home}[/]: {done.stderr.strip()[-300:]}")
    else:
        console.print(f"a day's battery plan for {home} is proposed: accept it on the viewer's Plan page")


def demo_sign_ins(store_url: str, homes: list[str]) -> dict[str, str]:
    """Create (or reset) the demo's sign-ins with fresh random passwords; returns name -> password.
    Also brings the schema up to date before the flow and the viewer start."""
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    db = Database(store_url, migrate=True)
    passwords = {DEMO_HOMEOWNER: secrets.token_urlsafe(9), DEMO_OPERATOR: secrets.token_urlsafe(9)}
    try:
        accounts = Accounts(db)
        for name, role, owned in ((DEMO_HOMEOWNER, Role.HOMEOWNER, homes), (DEMO_OPERATOR, Role.OPERATOR, [])):
            if accounts.principal(name) is None:
                accounts.add_user(name, passwords[name], role, owned, by="demo")
            else:
                accounts.set_password(name, passwords[name], by="demo")
                accounts.set_access(name, role, owned, by="demo")
    finally:
        db.close()
    return passwords


def import_history(store_url: str, console: Console) -> None:
    """The bundled weeks, shifted to end a minute before the replayed day starts (that day is
    shifted to end now), imported with insights; skipped when the store already has the home
    (a second demo on the same store)."""
    import polars as pl

    from ui.db import Database

    db = Database(store_url, migrate=True)
    try:
        (known,) = db.rows("SELECT count(*) FROM devices WHERE home_id = :h", {"h": SAMPLE_HOME})[0]
    finally:
        db.close()
    if known:
        console.print(f"{SAMPLE_HOME}'s history is already in {store_url}: not imported again")
        return
    weeks = pl.read_parquet(SAMPLE_WEEKS)
    end = datetime.now(timezone.utc) - timedelta(days=1, minutes=1)
    last = cast(datetime, weeks["ts"].max())  # a non-empty datetime column
    shifted = weeks.with_columns(pl.col("ts") + (end - last))
    path = Path(".shems/demo-history.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    shifted.write_parquet(path)
    console.print(f"importing four weeks of {SAMPLE_HOME} (real data, shifted to end yesterday) …")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "import", str(path), "--layout", "wide", "--ts-col", "ts",
         "--home-id", SAMPLE_HOME, "--device-cols", SAMPLE_WEEKS_DEVICES, "--tz", "Europe/London",
         "--store-url", store_url, "--tariffs", str(DEMO_TARIFFS)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if done.returncode:
        console.print(f"[red]the history import failed[/]: {done.stderr.strip()[-500:]}")
        return
    made = [line.strip() for line in done.stdout.splitlines()
            if line.strip().startswith(("forecasts:", "forecast scores:", "anomalies:", "recommendations:"))]
    console.print(f"  done in {time.monotonic() - started:.0f} s: " + "; ".join(" ".join(m.split()) for m in made))


def run_demo(mqtt_url: str, store_url: str, homes: int, duration: float | None,
             interval_s: float, metrics_port: int | None, ui_port: int | None = 8501) -> int:
    console = Console()
    url, broker = ensure_broker(mqtt_url)
    # The private broker goes with the demo whatever ends it (an unreachable store included):
    # left running it would hold its port and outlive its configuration's temporary folder.
    try:
        if broker:
            console.print(f"no broker at {mqtt_url}: started a private Mosquitto at {url}")
        return _run(console, url, store_url, homes, duration, interval_s, metrics_port, ui_port)
    finally:
        if broker:
            broker.stop()


def _run(console: Console, url: str, store_url: str, homes: int, duration: float | None,
         interval_s: float, metrics_port: int | None, ui_port: int | None) -> int:
    from pipeline.ingest.tabular import TableSpec
    from pipeline.tools.file_replay import replay
    from pipeline.tools.publisher import Publisher
    from pipeline.tools.simulator import run_simulation

    stop = threading.Event()
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--mqtt-url", url, "--store-url", store_url,
           "--client-id-prefix", "shems-demo", "--tariffs", str(DEMO_TARIFFS),
           "--timezone", "Europe/London"]
    if metrics_port:
        cmd += ["--metrics-port", str(metrics_port)]
    log_path = Path(".shems/demo-flow.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from dataclasses import replace

    from pipeline.energy.device_control import BatteryModel
    from pipeline.tools.simulator import make_homes

    fleet = make_homes(max(homes, 1), 1)
    capacity, power_w = DEMO_BATTERY["capacity_kwh"], DEMO_BATTERY["power_kw"] * 1000
    fleet[0] = replace(fleet[0], battery=BatteryModel(capacity, power_w, power_w, DEMO_BATTERY["efficiency"],
                                                      capacity * DEMO_BATTERY["soc"]))
    planned_home = fleet[0].home_id
    passwords = demo_sign_ins(store_url, [planned_home, SAMPLE_HOME])
    import_history(store_url, console)
    with open(log_path, "w") as log:
        flow = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    console.print(f"flow started (pid {flow.pid}, log {log_path}); store {store_url}")
    executor_log = Path(".shems/demo-executor.log")
    with open(executor_log, "w") as log:
        executor = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "execute", "--store-url", store_url, "--mqtt-url", url,
             "--client-id", f"shems-demo-executor-{os.getpid()}"],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    console.print(f"plan executor started (pid {executor.pid}, log {executor_log})")
    viewer = None
    if ui_port and (problem := listen_problem("127.0.0.1", ui_port)):
        # A viewer still open from an earlier demo, or another Streamlit app: the link printed
        # below must lead to this demo's viewer, not to whatever holds the port.
        ui_port = free_port()
        console.print(f"{problem}: the viewer listens on port {ui_port} instead")
    if ui_port:
        ui_log = Path(".shems/demo-viewer.log")
        with open(ui_log, "w") as log:
            viewer = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "ui", "--store-url", store_url,
                 "--mqtt-url", url, "--port", str(ui_port)],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        console.print(f"[bold]viewer: http://127.0.0.1:{ui_port}[/] (pid {viewer.pid}, log {ui_log})")
        console.print(f"  sign in as [bold]{DEMO_HOMEOWNER}[/] / [bold]{passwords[DEMO_HOMEOWNER]}[/] "
                      f"(homeowner of {planned_home} and {SAMPLE_HOME}; switch its "
                      "fridge off on the Devices page, accept its battery plan on the Plan page)")
        console.print(f"  or as [bold]{DEMO_OPERATOR}[/] / [bold]{passwords[DEMO_OPERATOR]}[/] "
                      "(operator: every home and the fleet)")
    if metrics_port:
        console.print(f"metrics: http://127.0.0.1:{metrics_port}/metrics")
    time.sleep(2.0)  # let the flow subscribe before the first publish
    publisher = Publisher(url)
    threads = [
        threading.Thread(
            target=replay,
            kwargs=dict(path=SAMPLE, spec=TableSpec.long(), publisher=publisher, speed=0,
                        topic_prefix="", progress=False, shift_to_now=True,
                        max_rate=800.0),
            daemon=True,
        ),
        threading.Thread(
            target=run_simulation,
            kwargs=dict(publisher=publisher, homes=homes, interval_s=interval_s,
                        duration_s=duration, topic_prefix="", seed=1, stop_event=stop, fleet=fleet),
            daemon=True,
        ),
        threading.Thread(target=propose_battery_plan, args=(store_url, planned_home, stop, console), daemon=True),
    ]
    for t in threads:
        t.start()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    previous: dict[str, int] = {}
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if duration is not None and elapsed >= duration:
                    break
                if flow.poll() is not None:
                    console.print(f"[red]the flow exited ({flow.returncode}); see {log_path}")
                    break
                try:
                    store = open_store(store_url)
                    counts = store.counts()
                    store.close()
                except Exception:  # the flow may still be creating the schema
                    counts = {}
                live.update(_counts_table(counts, previous, elapsed))
                previous = counts
                stop.wait(1.0)
    finally:
        stop.set()
        publisher.close()
        for child in (viewer, executor):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
        if flow.poll() is None:
            flow.send_signal(signal.SIGTERM)
            try:
                flow.wait(60)
            except subprocess.TimeoutExpired:
                flow.kill()
    console.print()
    _summary(store_url, console)
    console.print(f"[bold]done[/] at {datetime.now(timezone.utc):%H:%M:%S} UTC")
    console.print("[bold]to look at it again[/] (the data stay in the store):")
    port_flag = f" --port {ui_port}" if ui_port and ui_port != 8501 else ""
    console.print(f"  {shems_command()} ui --store-url {store_url}{port_flag}   "
                  f"then open http://127.0.0.1:{ui_port or 8501}")
    console.print(f"  sign in as {DEMO_HOMEOWNER} / {passwords[DEMO_HOMEOWNER]} or "
                  f"{DEMO_OPERATOR} / {passwords[DEMO_OPERATOR]}; `make demo` again continues it")
    return 0 if flow.returncode in (0, None) else 1
