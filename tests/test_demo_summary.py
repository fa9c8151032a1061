"""The demo's closing summary, read back from a real SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rich.console import Console

from pipeline.records import HomeWindow
from pipeline.tools.demo import _summary
from sinks.base import Batch
from sinks.stores import open_store


def test_a_home_exporting_pv_shows_no_import_and_a_negative_mean(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    start = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    store = open_store(url)
    store.migrate()
    store.write(Batch(home_windows=[
        HomeWindow("sun", start + timedelta(minutes=m), -1200.0, -1300.0, -1100.0, 0.0, 2) for m in range(3)
    ] + [HomeWindow("night", start + timedelta(minutes=m), 600.0, 500.0, 700.0, 10.0, 2) for m in range(2)]))
    store.close()
    console = Console(record=True, width=120)
    _summary(url, console)
    cells = [[c.strip() for c in line.strip("│ ").split("│")] for line in console.export_text().splitlines()]
    rows = {c[0]: c[1:] for c in cells if c[0] in ("sun", "night")}
    assert rows["sun"] == ["3", "0.000", "-1,200"]
    assert rows["night"] == ["2", "0.020", "600"]
