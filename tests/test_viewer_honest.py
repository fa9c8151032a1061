"""The viewer's honesty helpers, on their own: gaps break lines, an outage is one alert, money and
durations read as a person says them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from ui import fmt
from ui.charts import with_gaps
from ui.data import ANOMALY_SCHEMA, grouped_alerts

T0 = datetime(2015, 6, 30, 12, tzinfo=timezone.utc)


def test_a_gap_longer_than_two_steps_becomes_nulls_so_plotly_breaks_the_line():
    times = [T0 + timedelta(minutes=m) for m in (0, 1, 2, 2 * 1440, 2 * 1440 + 1)]
    frame = pl.DataFrame({"bucket": times, "w": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = with_gaps(frame, "bucket", 60, "w")
    assert out["w"].to_list() == [1.0, 2.0, 3.0, None, None, 4.0, 5.0]
    # One null a step after the last point before the gap, one a step before the next.
    assert out["bucket"][3] == times[2] + timedelta(minutes=1)
    assert out["bucket"][4] == times[3] - timedelta(minutes=1)
    # Points two steps apart are no gap.
    assert with_gaps(frame.head(3), "bucket", 60, "w").height == 3


def test_a_home_wide_outage_is_one_alert_listing_its_devices():
    devices = ["mains", "kettle", "fridge", "washer"]
    rows = [(d, "silent", T0 + timedelta(seconds=20 * i), T0 + timedelta(hours=3), 9.0, f"{d} silent",
             None, None) for i, d in enumerate(devices)]
    rows.append(("kettle", "long_running", T0 - timedelta(days=1), None, 4.0, "kettle on", None, None))
    found = pl.DataFrame(rows, schema=dict(ANOMALY_SCHEMA), orient="row").with_columns(
        pl.col("ended_at").is_null().alias("open"))
    alerts = grouped_alerts(found)
    assert alerts.height == 2
    outage = alerts.filter(pl.col("kind") == "silent").row(0, named=True)
    assert sorted(outage["devices"]) == sorted(devices) and not outage["open"]
    assert outage["started_at"] == T0 and outage["ended_at"] == T0 + timedelta(hours=3)
    assert len(outage["keys"]) == 4 and not outage["acknowledged"]
    kettle = alerts.filter(pl.col("kind") == "long_running").row(0, named=True)
    assert kettle["open"] and kettle["devices"] == ["kettle"] and kettle["ended_at"] is None
    # The same kind a day apart: two events.
    later = pl.concat([found, found.head(1).with_columns(pl.col("started_at") + timedelta(days=1))])
    assert grouped_alerts(later).filter(pl.col("kind") == "silent").height == 2


def test_money_durations_and_plurals_read_as_words():
    assert fmt.money(6.24, "GBP") == "£6.24"
    assert fmt.money(1234.5, "EUR", "de_DE") == "1.234,50\xa0€"
    assert fmt.money(None, "GBP") == fmt.NONE
    # what rounds to zero has no sign; what does not keeps it
    assert [fmt.number(v, digits=0) for v in (-0.0, -0.4, -0.6)] == ["0", "0", "-1"]
    assert fmt.number(-0.04, "de_DE") == "0,0" and fmt.number(-0.06, "de_DE") == "-0,1"
    assert (fmt.money(-0.001, "GBP"), fmt.money(-0.4, "GBP", digits=0)) == ("£0.00", "£0")
    assert fmt.money(-0.01, "GBP") == "-£0.01"
    assert fmt.money(-0.4, "JPY", "ja_JP") == "￥0" and fmt.money(-0.6, "JPY", "ja_JP") == "-￥1"  # no minor unit
    assert fmt.ago(T0 - timedelta(days=3), T0) == "3 days ago"
    assert fmt.ago(T0 - timedelta(days=11 * 365 + 3), T0) == "11 years ago"
    assert fmt.plural(1, "home") == "1 home" and fmt.plural(2, "home") == "2 homes"
    assert fmt.locale("en-US") == "en_US" and fmt.locale("xx-nonsense") == fmt.DEFAULT_LOCALE
    assert fmt.label("washing_machine") == "washing machine" and fmt.label("") == "whole home"


def test_amounts_in_the_pipelines_texts_get_the_currency_symbol():
    text = "cost 240.18 GBP a year at 0.233 GBP/kWh; saves 1,234.50 GBP; GBPX 3 stays"
    assert fmt.money_in_text(text, "GBP") == ("cost £240.18 a year at £0.233/kWh; saves £1,234.50; "
                                                "GBPX 3 stays")


def test_usage_of_a_single_interval_is_drawn_on_an_axis_an_interval_either_side():
    """Two minutes into a new home: one 15-minute interval. The axis spanned a millisecond
    ("07:59:59.999 ... 08:00:00.0005"), and a one-point line drew nothing."""
    from ui.charts import stacked_usage

    at = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)
    bands = pl.DataFrame({"bucket": [at, at], "device_id": ["kettle", "unmetered"], "kind": ["appliance", "appliance"],
                          "wh": [12.0, 30.0]}, schema_overrides={"bucket": pl.Datetime("us", "UTC")})
    fig = stacked_usage(bands, "Europe/London")
    low, high = fig.layout.xaxis.range
    assert high - low == timedelta(minutes=2)  # a minute either side (the step of one bucket)
    assert all("markers" in trace.mode for trace in fig.data)
    two = pl.concat([bands, bands.with_columns(pl.col("bucket") + timedelta(minutes=15))])
    assert stacked_usage(two, "UTC").layout.xaxis.range is None  # more than one: Plotly's own axis
