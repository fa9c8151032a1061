"""`shems savings` against real stores: 24 SGSC homes' hourly use in home_1h, one home accepts
advice on 2013-07-15 and cuts its use by 40 % from the next day; the measurement finds the cut
within its interval, with a comparison group, priced by the stored tariff; advice accepted too
recently says it is still measuring, and one without history says why it cannot be measured."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main
from pipeline.energy.tariff import book_from_mapping
from pipeline.records import DeviceInfo, DeviceKind, Recommendation, Source
from sinks.base import Batch
from sinks.stores import open_store

FIXTURE = Path(__file__).parent / "fixtures" / "sgsc_24homes_daily_2013-03_2013-08.csv"
ZONE = "Australia/Brisbane"  # SGSC's clock is AEST all year: Brisbane keeps no summer time
SPLIT = date(2013, 7, 15)
CUT = 0.4


@pytest.fixture(params=["sqlite", "postgres"])
def seeded(request, tmp_path):
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    daily = pl.read_csv(FIXTURE, schema_overrides={"customer_id": pl.String}, try_parse_dates=True)
    homes = sorted(daily["customer_id"].unique().to_list())
    treated = homes[0]
    store = open_store(url)
    store.migrate()
    store.upsert_devices([DeviceInfo(h, "mains", DeviceKind.METER, Source.NATIVE, timezone=ZONE) for h in homes])
    book = book_from_mapping({"currency": "AUD", "timezone": ZONE,
                              "tariff": [{"name": "flat", "effective_from": date(2010, 1, 1), "kind": "flat",
                                          "import_price": 0.25}]})
    store.upsert_tariffs(book.to_rows())
    store.write(Batch(recommendations=[
        Recommendation(treated, "", "standby_waste", datetime(2013, 5, 30, tzinfo=timezone.utc),
                       "Switch off standby", "detail", 40.0, 10.0, "AUD"),
        Recommendation(homes[1], "", "peak_reduction", datetime(2013, 8, 20, tzinfo=timezone.utc),
                       "Too recent", "detail", 5.0, 1.25, "AUD"),
        Recommendation("newcomer", "", "standby_waste", datetime(2013, 5, 30, tzinfo=timezone.utc),
                       "No history", "detail", 5.0, 1.25, "AUD"),
    ]))
    rows = []
    true_saving = 0.0
    for home, day, kwh in daily.iter_rows():
        if home == treated and day > SPLIT:
            true_saving += kwh * CUT
            kwh *= 1 - CUT
        midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) - timedelta(hours=10)
        for h in range(24):
            rows.append((home, midnight + timedelta(hours=h), kwh * 1000 / 24))
    _insert_home_hours(store, url, rows)
    for home, kind, when in ((treated, "standby_waste", datetime(2013, 7, 15, 3, tzinfo=timezone.utc)),
                             (homes[1], "peak_reduction", datetime(2013, 8, 25, 3, tzinfo=timezone.utc)),
                             ("newcomer", "standby_waste", datetime(2013, 6, 1, 3, tzinfo=timezone.utc))):
        assert store.set_recommendation_status(home, kind, "", "accepted", "owner")
        _set_accepted_at(store, url, home, kind, when)
    store.close()
    return url, treated, true_saving


def _insert_home_hours(store, url, rows):
    if url.startswith("sqlite"):
        store.conn.executemany("INSERT INTO home_1h VALUES (?,?,?,?,?,?,?,?,?)",
                               [(h, int(ts.timestamp() * 1e6), wh, wh, wh, wh, 60, 60, wh) for h, ts, wh in rows])
        store.conn.commit()
    else:
        with store.conn.cursor() as cur, cur.copy(
                "COPY home_1h (home_id, bucket, mean_power_w, min_power_w, max_power_w, energy_wh, samples, "
                "minutes, power_wh) FROM STDIN") as copy:
            for h, ts, wh in rows:
                copy.write_row((h, ts, wh, wh, wh, wh, 60, 60, wh))
        store.conn.commit()


def _set_accepted_at(store, url, home, kind, when):
    if url.startswith("sqlite"):
        store.conn.execute("UPDATE recommendations SET status_changed_at = ? WHERE home_id = ? AND kind = ?",
                           (int(when.timestamp() * 1e6), home, kind))
        store.conn.commit()
    else:
        store.conn.execute("UPDATE recommendations SET status_changed_at = %s WHERE home_id = %s AND kind = %s",
                           (when, home, kind))
        store.conn.commit()


def test_savings_measures_the_cut_with_a_comparison_group(seeded, capsys):
    url, treated, true_saving = seeded
    assert main(["savings", "--store-url", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_home = {r["home_id"]: r for r in out["recommendations"]}
    cut = by_home[treated]
    assert cut["state"] == "measured", cut
    assert "comparison group of 22" in cut["method"]  # 24 homes less the treated and the busy one
    assert abs(cut["saved_kwh"] - true_saving) <= cut["uncertainty_kwh"]
    assert cut["significant"] is True
    assert cut["money"] == pytest.approx(cut["saved_kwh"] * 0.25, rel=1e-6)
    recent = next(r for h, r in by_home.items() if h not in (treated, "newcomer"))
    assert recent["state"] == "measuring" and "of 14 complete days" in recent["note"]
    assert by_home["newcomer"]["state"] == "not measurable"
    assert "complete days before" in by_home["newcomer"]["note"]
    assert out["fleet"]["measured"] == 1 and out["fleet"]["significant"] == 1


def test_savings_table_and_one_line_errors(seeded, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width
    url, treated, _ = seeded
    assert main(["savings", "--store-url", url, "--home", treated]) == 0
    text = capsys.readouterr().out
    assert "Switch off standby" in text and "measured" in text
    assert main(["savings", "--store-url", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_viewer_shows_the_measured_saving_to_the_household_and_the_fleet(seeded, monkeypatch):
    """The household sees its accepted advice's measured saving on the Alerts page; an operator
    sees the fleet's measured savings on the Fleet page (Streamlit AppTest on the same store)."""
    from streamlit.testing.v1 import AppTest

    from tests.viewer_seed import APP, apply_env, viewer_env
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    url, treated, _ = seeded
    db = Database(url)
    try:
        accounts = Accounts(db)
        accounts.add_user("hilda", "hilda-secret-12", Role.HOMEOWNER, [treated], by="test")
        accounts.add_user("otto", "otto-secret-123", Role.OPERATOR, by="test")
        tokens = {u: accounts.sign_in(u, pw).token for u, pw in (("hilda", "hilda-secret-12"),
                                                                ("otto", "otto-secret-123"))}
    finally:
        db.close()
    apply_env(monkeypatch, viewer_env(url))

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["session_token"] = tokens["hilda"]
    at.run()
    at.switch_page("views/alerts.py").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = "\n".join(c.value for c in at.caption)
    assert "Measured:" in captions and "kWh saved" in captions and "90 % confidence" in captions

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["session_token"] = tokens["otto"]
    at.run()
    at.switch_page("views/fleet.py").run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Measured"] == "1 of 3"
    assert metrics["Promises kept"].endswith("of 1")
    # money as the household's pages write it (the SGSC homes' tariff is in AUD), never "-$0.00"
    for label in ("Saved in all", "Median a month"):
        assert re.fullmatch(r"-?A?\$\d[\d,]*\.\d\d", metrics[label]) and not re.match(r"-A?\$0\.00$", metrics[label]), \
            metrics[label]
