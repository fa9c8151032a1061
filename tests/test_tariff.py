"""Tariffs: flat, time-of-use across daylight-saving changes, dynamic price files, histories,
the TOML book, its stored form, and vectorised cost checked against a plain-Python reference."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pipeline.energy.tariff import (
    DEFAULT_HOME,
    TariffBook,
    TariffKind,
    book_from_mapping,
    book_from_toml,
    load_price_file,
    price_frame,
    with_cost,
)

UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")
REPO = Path(__file__).resolve().parents[1]

E7 = {"effective_from": date(2013, 1, 1), "kind": "tou", "import_price": 0.28, "export_price": 0.05,
      "period": [{"name": "night", "start": "00:30", "end": "07:30", "import_price": 0.09},
                 {"name": "peak", "start": "16:00", "end": "19:00", "import_price": 0.38,
                  "days": "weekdays"}]}


def book(*tariffs, homes=None, zone="Europe/London") -> TariffBook:
    data = {"currency": "GBP", "timezone": zone, "tariff": list(tariffs)}
    if homes:
        data["home"] = homes
    return book_from_mapping(data)


def local(*args) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slots_of_local_day(b: TariffBook, day: date, step=timedelta(minutes=30)) -> pl.DataFrame:
    start = datetime.combine(day, datetime.min.time(), LONDON)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), LONDON)
    return price_frame(b, "h", start, end, step)


def test_flat_cost_and_export():
    b = book({"effective_from": date(2020, 1, 1), "import_price": 0.25, "export_price": 0.05})
    frame = pl.DataFrame({"home_id": ["h", "h"], "bucket": [utc(2021, 5, 1, 12), utc(2021, 5, 1, 13)],
                          "energy_wh": [2000.0, -1000.0]})
    out = with_cost(frame, b)
    assert out["cost"].to_list() == pytest.approx([0.5, -0.05])
    assert out["import_price"].to_list() == [0.25, 0.25]


def test_spring_forward_day_in_london():
    # 2024-03-31: clocks go from 01:00 GMT to 02:00 BST; the local day has 23 hours.
    frame = slots_of_local_day(book(E7), date(2024, 3, 31))
    assert frame.height == 46
    night = frame.filter(pl.col("import_price") == 0.09)
    # 00:30-01:00 GMT then 02:00-07:30 BST: 6 real hours of night rate, not 7.
    assert night.height == 12
    assert night["ts"][0] == local(2024, 3, 31, 0, 30)
    assert night["ts"][1] == local(2024, 3, 31, 2, 0)  # 01:00-02:00 does not exist
    assert night["ts"][-1] == local(2024, 3, 31, 7, 0)
    # Sunday: no weekday peak.
    assert frame.filter(pl.col("import_price") == 0.38).height == 0


def test_fall_back_day_in_london():
    # 2024-10-27: clocks go from 02:00 BST back to 01:00 GMT; 01:00-02:00 happens twice.
    frame = slots_of_local_day(book(E7), date(2024, 10, 27))
    assert frame.height == 50
    night = frame.filter(pl.col("import_price") == 0.09)
    assert night.height == 16  # 8 real hours of night rate
    first = utc(2024, 10, 27, 0, 30)  # 01:30 BST
    second = utc(2024, 10, 27, 1, 30)  # 01:30 GMT
    prices = dict(zip(frame["ts"].to_list(), frame["import_price"].to_list()))
    assert prices[first] == prices[second] == 0.09
    assert prices[utc(2024, 10, 27, 7, 30)] == 0.28  # 07:30 GMT, day rate


def test_weekday_peak_and_months():
    b = book({"effective_from": date(2020, 1, 1), "kind": "tou", "import_price": 0.2,
              "period": [{"name": "winter peak", "start": "17:00", "end": "20:00", "import_price": 0.5,
                          "days": ["mon", "tue", "wed", "thu", "fri"], "months": [12, 1, 2]},
                         {"name": "late", "start": "23:00", "end": "02:00", "import_price": 0.1}]})
    def price(ts: datetime) -> float:
        return price_frame(b, "h", ts, ts + timedelta(minutes=1), timedelta(minutes=1))["import_price"][0]

    assert price(local(2024, 1, 15, 17, 0)) == 0.5  # Monday in January
    assert price(local(2024, 1, 15, 20, 0)) == 0.2  # end is exclusive
    assert price(local(2024, 1, 13, 18, 0)) == 0.2  # Saturday
    assert price(local(2024, 7, 15, 18, 0)) == 0.2  # July: not a peak month
    assert price(local(2024, 7, 15, 23, 30)) == 0.1  # wraps past midnight
    assert price(local(2024, 7, 16, 1, 59)) == 0.1
    assert price(local(2024, 7, 16, 2, 0)) == 0.2


def test_new_tariff_never_rewrites_the_past():
    old = book(E7)
    new = book(E7, {"effective_from": date(2024, 6, 1), "import_price": 0.30})
    buckets = pl.datetime_range(utc(2024, 5, 20), utc(2024, 6, 10), "1h", closed="left",
                                time_zone="UTC", eager=True)
    frame = pl.DataFrame({"home_id": "h", "bucket": buckets, "energy_wh": 500.0})
    before, after = with_cost(frame, old), with_cost(frame, new)
    # Bare date = local midnight: 2024-06-01 00:00 BST is 2024-05-31 23:00 UTC.
    switch = utc(2024, 5, 31, 23)
    past = pl.col("bucket") < switch
    assert before.filter(past)["cost"].to_list() == after.filter(past)["cost"].to_list()
    assert after.filter(~past)["import_price"].unique().to_list() == [0.30]
    assert before.filter(~past)["import_price"].n_unique() == 3


def test_home_history_is_default_until_its_own_first_entry():
    b = book({"effective_from": date(2020, 1, 1), "import_price": 0.2},
             {"effective_from": date(2023, 1, 1), "import_price": 0.3},
             homes={"h7": {"tariff": [{"effective_from": date(2022, 6, 1), "import_price": 0.1}]}})
    assert [t.import_price for t in b.history("h7")] == [0.2, 0.1]
    assert [t.import_price for t in b.history("other")] == [0.2, 0.3]
    frame = pl.DataFrame({"home_id": ["h7", "h7", "x", "x"],
                          "bucket": [utc(2021, 1, 1), utc(2024, 1, 1), utc(2021, 1, 1), utc(2024, 1, 1)],
                          "energy_wh": [1000.0] * 4})
    assert with_cost(frame, b)["cost"].to_list() == pytest.approx([0.2, 0.1, 0.2, 0.3])


def test_before_the_first_tariff_is_an_error():
    b = book({"effective_from": date(2020, 1, 1), "import_price": 0.2})
    frame = pl.DataFrame({"home_id": ["h"], "bucket": [utc(2019, 6, 1)], "energy_wh": [1.0]})
    with pytest.raises(ValueError, match="no tariff in effect for home 'h'.*first tariff starts 2020-01-01T00:00:00"):
        with_cost(frame, b)


def test_dynamic_prices_from_csv_and_parquet(tmp_path: Path):
    rows = [(utc(2024, 1, 1) + timedelta(minutes=15 * i), 0.1 + i / 100, 0.01 * i) for i in range(8)]
    csv = tmp_path / "p.csv"
    csv.write_text("ts,import_price,export_price\n" + "".join(
        f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{p},{e}\n" for t, p, e in rows))
    parquet = tmp_path / "p.parquet"
    pl.DataFrame({"ts": [r[0] for r in rows], "import_price": [r[1] for r in rows],
                  "export_price": [r[2] for r in rows]}).write_parquet(parquet)
    for path in (csv, parquet):
        series = load_price_file(path)
        assert series.step_s == 900 and len(series.import_price) == 8
        b = book({"effective_from": "2024-01-01T00:00:00Z", "kind": "dynamic",
                  "price_file": str(path)}, zone="UTC")
        frame = pl.DataFrame({"home_id": "h", "bucket": [utc(2024, 1, 1, 0, 14), utc(2024, 1, 1, 0, 15),
                                                         utc(2024, 1, 1, 1, 59)],
                              "energy_wh": [1000.0, 1000.0, -1000.0]})
        out = with_cost(frame, b)
        assert out["import_price"].to_list() == pytest.approx([0.10, 0.11, 0.17])
        assert out["cost"].to_list() == pytest.approx([0.10, 0.11, -0.07])
        late = frame.with_columns(bucket=pl.lit(utc(2024, 1, 1, 2, 0)))
        with pytest.raises(ValueError, match="no dynamic price.*covers 2024-01-01T00:00:00\\+00:00 to "
                                             "2024-01-01T02:00:00\\+00:00"):
            with_cost(late, b)


@pytest.mark.parametrize("content, message", [
    ("ts,import_price\n2024-01-01T00:00:00Z,0.1\n2024-01-01T00:10:00Z,0.1\n", "step 10 min"),
    ("ts,import_price\n2024-01-01T00:00:00Z,0.1\n2024-01-01T00:15:00Z,0.1\n2024-01-01T01:00:00Z,0.2\n",
     "irregular step at row 3"),
    ("ts,import_price\n2024-01-01T00:00:00Z,\n2024-01-01T00:15:00Z,0.1\n", "import_price is missing"),
    ("time,price\n2024-01-01T00:00:00Z,0.1\n", "needs the columns ts, import_price"),
    ("ts,import_price\nyesterday,0.1\n", "ts must be ISO times"),
])
def test_bad_price_files(tmp_path: Path, content: str, message: str):
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_price_file(path)


@pytest.mark.parametrize("data, message", [
    ({"timezone": "UTC", "tariff": [{"effective_from": date(2020, 1, 1), "import_price": 1}]}, "set currency"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1)}]}, "import_price is required"),
    ({"currency": "GBP", "tariff": [{"import_price": 0.2}]}, "effective_from is required"),
    ({"currency": "GBP", "tariff": [{"effective_from": datetime(2020, 1, 1), "import_price": 0.2}]},
     "needs an offset"),
    ({"currency": "GBP", "timezone": "Mars/Olympus", "tariff": []}, "unknown time zone 'Mars/Olympus'"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "import_price": "cheap"}]},
     "import_price must be a number"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "kind": "spot", "import_price": 1}]},
     "kind must be flat, tou or dynamic"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "import_pirce": 1}]},
     "unknown keys \\['import_pirce'\\]"),
    ({"currency": "GBP", "tariff": [{**E7, "period": E7["period"] + [
        {"name": "boost", "start": "07:00", "end": "08:00", "import_price": 0.15}]}]},
     "periods 'night' and 'boost' overlap"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "kind": "tou", "period": [
        {"name": "night", "start": "00:30", "end": "07:30", "import_price": 0.1}]}]},
     "no time-of-use period covers mon 00:00"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "kind": "tou", "import_price": 0.2,
                                     "period": [{"start": "25:00", "end": "07:30", "import_price": 0.1}]}]},
     "times are HH:MM"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "kind": "tou", "import_price": 0.2,
                                     "period": [{"start": "01:00", "end": "02:00", "import_price": 0.1,
                                                 "days": ["monday", "funday"]}]}]}, "unknown day"),
    ({"currency": "GBP", "tariff": [{"effective_from": date(2020, 1, 1), "import_price": 0.2},
                                    {"effective_from": date(2020, 1, 1), "import_price": 0.3}]},
     "two tariffs with the same effective_from"),
    ({"currency": "GBP", "home": {"h": {"tariff": []}}}, "needs at least one"),
])
def test_bad_books_say_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        book_from_mapping(data)


def test_toml_file_errors(tmp_path: Path):
    path = tmp_path / "t.toml"
    path.write_text("currency = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        book_from_toml(path)
    with pytest.raises(ValueError, match="cannot read tariff file"):
        book_from_toml(tmp_path / "absent.toml")


def test_example_book_loads_and_survives_json_and_rows():
    b = book_from_toml(REPO / "deploy" / "tariffs.example.toml")
    assert b.currency == "GBP"
    assert [t.kind for t in b.history("house7")] == [TariffKind.FLAT, TariffKind.TOU, TariffKind.DYNAMIC]
    assert [t.kind for t in b.history("house2")] == [TariffKind.FLAT, TariffKind.TOU]
    assert TariffBook.from_json(b.to_json()) == b
    rows = b.to_rows()
    assert {r.home_id for r in rows} == {DEFAULT_HOME, "house7"}
    assert all(r.effective_from.tzinfo is not None for r in rows)
    assert TariffBook.from_rows(rows) == b
    # The rebuilt dynamic tariff prices from its stored prices, not from the file.
    start = utc(2024, 3, 30, 12)
    assert price_frame(TariffBook.from_rows(rows), "house7", start, start + timedelta(hours=6)).equals(
        price_frame(b, "house7", start, start + timedelta(hours=6)))


def _reference_price(b: TariffBook, home: str, ts: datetime) -> float:
    """Plain-Python pricing with zoneinfo, written independently of the vectorised code."""
    tariff = [t for t in b.history(home) if t.effective_from <= ts][-1]
    if tariff.kind == TariffKind.FLAT:
        return tariff.import_price
    wall = ts.astimezone(ZoneInfo(tariff.timezone))
    minute = wall.hour * 60 + wall.minute
    for p in tariff.periods:
        inside = (p.start_min <= minute < p.end_min if p.start_min < p.end_min
                  else minute >= p.start_min or minute < p.end_min)
        if inside and wall.weekday() in p.days and (not p.months or wall.month in p.months):
            return p.import_price
    return tariff.import_price


def test_with_cost_matches_a_plain_python_reference():
    winter = {**E7, "effective_from": date(2024, 10, 27), "period": [
        {"name": "winter peak", "start": "16:30", "end": "19:30", "import_price": 0.45,
         "months": [11, 12, 1, 2]},
        {"name": "night", "start": "23:30", "end": "06:00", "import_price": 0.08}]}
    # h1: flat, then the winter TOU; h2: flat (the default) until its own E7 from June.
    b = book({"effective_from": date(2023, 1, 1), "import_price": 0.2, "export_price": 0.05}, winter,
             homes={"h2": {"tariff": [{**E7, "effective_from": date(2024, 6, 1)}]}})
    rng = random.Random(4)
    start = utc(2024, 3, 1)
    buckets = sorted(start + timedelta(minutes=rng.randrange(0, 365 * 1440)) for _ in range(3000))
    homes = [rng.choice(["h1", "h2"]) for _ in buckets]
    energy = [rng.uniform(-50, 200) for _ in buckets]
    out = with_cost(pl.DataFrame({"home_id": homes, "bucket": buckets, "energy_wh": energy}), b)
    for home, ts, e, price, cost in zip(homes, buckets, energy, out["import_price"], out["cost"]):
        assert price == _reference_price(b, home, ts), (home, ts)
        expected = e / 1000 * (price if e >= 0 else 0.05)
        assert cost == pytest.approx(expected)


def test_naive_buckets_are_utc_and_order_is_kept():
    b = book(E7)
    aware = pl.DataFrame({"home_id": "h", "bucket": [utc(2024, 7, 1, 23, 45), utc(2024, 7, 1, 12)],
                          "energy_wh": [100.0, 100.0]})
    naive = aware.with_columns(pl.col("bucket").dt.replace_time_zone(None))
    assert with_cost(naive, b)["cost"].to_list() == with_cost(aware, b)["cost"].to_list()
    # 23:45 UTC is 00:45 BST (night), 12:00 UTC is 13:00 BST (day).
    assert with_cost(aware, b)["import_price"].to_list() == [0.09, 0.28]


def test_book_round_trips_through_the_store_tariffs_table(store_url):
    import sinks.base as base
    from sinks.stores import open_store

    b = book_from_toml(REPO / "deploy" / "tariffs.example.toml")
    store = open_store(store_url)
    try:
        store.migrate()
        store.upsert_tariffs([base.TariffRow(r.home_id, r.effective_from, r.spec_json) for r in b.to_rows()])
        assert TariffBook.from_rows(store.tariffs()) == b
    finally:
        store.close()
