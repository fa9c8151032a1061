"""Bills (pipeline.energy.bill): a UK supplier's arithmetic to the penny, time-of-use bands over a
clock change, a tariff change within the month, the projection and the budget alert."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pipeline.energy.bill import Basis, bill, budget_alert, device_costs, month_bill, month_span
from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod, book_from_mapping
from pipeline.records import BudgetAlertKind

LONDON = "Europe/London"
UTC = timezone.utc


def _frame(start: datetime, values_wh: list[float], step: timedelta) -> pl.DataFrame:
    return pl.DataFrame({"bucket": [start + i * step for i in range(len(values_wh))],
                         "energy_wh": [float(v) for v in values_wh]},
                        schema={"bucket": pl.Datetime("us", "UTC"), "energy_wh": pl.Float64})


# A household's day of half-hourly smart-meter data (Wh per half hour, 00:00-00:30 first): a
# ~140 W night base, a morning kettle and shower, an evening cooking and TV peak. 8,438 Wh a day.
DAY_WH = [75, 70, 68, 66, 65, 64, 64, 65, 66, 70, 95, 180, 260, 240, 190, 150, 140, 135, 140, 160,
          170, 150, 140, 135, 140, 150, 160, 150, 140, 160, 210, 300, 420, 480, 450, 380, 330, 300,
          280, 260, 240, 210, 180, 150, 120, 100, 90, 80]
WEEKEND_EXTRA_WH = 25  # per half hour 09:00-17:00 on Saturdays and Sundays (people at home)


def november_2024_readings() -> pl.DataFrame:
    """November 2024 in London (GMT all month, 30 days x 48 half hours = 1,440 readings)."""
    values = []
    for d in range(30):
        weekend = date(2024, 11, 1 + d).weekday() >= 5
        values += [wh + (WEEKEND_EXTRA_WH if weekend and 18 <= i < 34 else 0) for i, wh in enumerate(DAY_WH)]
    return _frame(datetime(2024, 11, 1, tzinfo=UTC), values, timedelta(minutes=30))


def test_a_uk_standard_variable_bill_for_november_2024_to_the_penny():
    """A monthly bill on Ofgem's price cap for 1 October - 31 December 2024, GB average, Direct
    Debit: electricity 24.50 p/kWh and a 60.99 p/day standing charge, both INCLUDING 5 % VAT
    (ofgem.gov.uk, "New energy price cap level for October to December 2024 starts today").
    Suppliers hold and print the rates before VAT and add VAT once on the charges, as on the
    statements of Octopus, British Gas, EDF (usage x unit rate, days x standing charge, each line
    in pounds and pence, then "VAT at 5%" on the total of the charges):

    * unit rate 24.50 / 1.05 = 23.3333 p/kWh, standing charge 60.99 / 1.05 = 58.0857 p/day (the
      four decimal places suppliers publish ex-VAT rates to);
    * usage: the month's half-hourly readings below, 30 x 8,438 Wh plus 9 weekend days x 16
      half hours x 25 Wh = 256,740 Wh = 256.740 kWh (a typical ~3,100 kWh/year home's November).

    By hand:
      energy    256.740 kWh x £0.233333   = £59.9059 -> £59.91
      standing   30 days   x £0.580857    = £17.4257 -> £17.43
      charges                               £77.34
      VAT at 5 % of £77.34                = £3.867   -> £3.87
      total                                 £81.21

    Priced with the VAT-inclusive cap rates instead (256.740 x 24.50p = £62.90, 30 x 60.99p =
    £18.30: £81.20) the total is a penny less: why rounding per line has to be reproduced.
    """
    cap = Tariff(datetime(2024, 10, 1, tzinfo=ZoneInfo(LONDON)).astimezone(UTC), TariffKind.FLAT, "GBP",
                 LONDON, "Standard variable", import_price=0.233333, standing_charge=0.580857, tax_rate=0.05)
    start, end = month_span(2024, 11, LONDON)
    b = bill((cap,), november_2024_readings(), start, end, LONDON, "house")
    assert b.days == 30 and (b.first_day, b.last_day) == (date(2024, 11, 1), date(2024, 11, 30))
    energy, standing = b.lines
    assert (energy.label, energy.quantity, energy.rate, energy.amount) == (
        "Standard variable · unit rate", Decimal("256.740"), Decimal("0.233333"), Decimal("59.91"))
    assert (standing.label, standing.quantity, standing.rate, standing.amount) == (
        "Standing charge", Decimal(30), Decimal("0.580857"), Decimal("17.43"))
    assert b.subtotal == Decimal("77.34")
    (vat,) = b.taxes
    assert (vat.rate, vat.base, vat.amount) == (Decimal("0.05"), Decimal("77.34"), Decimal("3.87"))
    assert b.total == Decimal("81.21") and b.due == Decimal("81.21") and not b.exports


def test_economy_7_bands_in_local_time_over_the_autumn_clock_change():
    """October 2024 in London has 31 days and 745 hours (BST ends 27 October, 01:00-02:00 happens
    twice). A night rate 00:30-07:30 on the wall clock gets 30 x 7 h + 8 h = 218 h of a steady
    600 W load (130.800 kWh); the day rate the other 527 h (316.200 kWh). Rates (assumed, before
    VAT): day 30p, night 13p, standing 55p/day, VAT 5 %.

      night 130.800 x 0.13 = 17.004  -> 17.00
      day   316.200 x 0.30 = 94.86
      standing 31 x 0.55   = 17.05
      charges 128.91; VAT 6.4455 -> 6.45 (half up); total 135.36
    """
    e7 = Tariff(datetime(2024, 1, 1, tzinfo=UTC), TariffKind.TOU, "GBP", LONDON, "Economy 7",
                import_price=0.30, periods=(TouPeriod("night", 30, 7 * 60 + 30, 0.13),),
                standing_charge=0.55, tax_rate=0.05, base_band="day")
    start, end = month_span(2024, 10, LONDON)
    minutes = int((end - start) / timedelta(minutes=1))
    assert minutes == 745 * 60
    b = bill((e7,), _frame(start, [10.0] * minutes, timedelta(minutes=1)), start, end, LONDON)
    lines = {line.label: (line.quantity, line.amount) for line in b.lines}
    assert lines == {"Economy 7 · night": (Decimal("130.800"), Decimal("17.00")),
                     "Economy 7 · day": (Decimal("316.200"), Decimal("94.86")),
                     "Standing charge": (Decimal(31), Decimal("17.05"))}
    assert (b.subtotal, b.tax, b.total) == (Decimal("128.91"), Decimal("6.45"), Decimal("135.36"))


def test_a_price_change_within_the_month_splits_energy_and_standing_days_and_export_is_credited():
    """Flat 20p/day 40p until 16 June (local midnight), then 25p and 50p/day with 20 % tax from the
    16th; 1 kWh imported every local day at noon and 2 kWh exported at 13:00 (export 5p)."""
    zone = ZoneInfo("Europe/Berlin")
    a = Tariff(datetime(2024, 1, 1, tzinfo=zone).astimezone(UTC), TariffKind.FLAT, "EUR", "Europe/Berlin",
               "A", import_price=0.20, export_price=0.05, standing_charge=0.40, tax_rate=0.05)
    b_ = Tariff(datetime(2024, 6, 16, tzinfo=zone).astimezone(UTC), TariffKind.FLAT, "EUR", "Europe/Berlin",
                "B", import_price=0.25, export_price=0.05, standing_charge=0.50, tax_rate=0.20,
                levy_per_kwh=0.0205)
    rows = []
    for d in range(30):
        noon = datetime(2024, 6, 1 + d, 12, tzinfo=zone).astimezone(UTC)
        rows += [(noon, 1000.0), (noon + timedelta(hours=1), -2000.0)]
    energy = pl.DataFrame(rows, schema={"bucket": pl.Datetime("us", "UTC"), "energy_wh": pl.Float64},
                          orient="row")
    start, end = month_span(2024, 6, "Europe/Berlin")
    got = bill((a, b_), energy, start, end, "Europe/Berlin")
    lines = {line.label: (line.quantity, line.amount) for line in got.lines}
    assert lines == {"A · unit rate": (Decimal("15.000"), Decimal("3.00")),
                     "B · unit rate": (Decimal("15.000"), Decimal("3.75")),
                     "B · levy": (Decimal("15.000"), Decimal("0.31")),  # 0.3075 -> 0.31
                     "A · standing charge": (Decimal(15), Decimal("6.00")),
                     "B · standing charge": (Decimal(15), Decimal("7.50"))}
    taxes = {t.rate: (t.base, t.amount) for t in got.taxes}
    assert taxes == {Decimal("0.05"): (Decimal("9.00"), Decimal("0.45")),
                     Decimal("0.2"): (Decimal("11.56"), Decimal("2.31"))}  # 2.312 -> 2.31
    assert got.total == Decimal("23.32")
    assert [(x.label, x.quantity, x.amount) for x in got.exports] == [
        ("A · export", Decimal("30.000"), Decimal("-1.50")), ("B · export", Decimal("30.000"), Decimal("-1.50"))]
    assert got.export_credit == Decimal("3.00") and got.due == Decimal("20.32")


def test_bill_terms_survive_toml_and_the_store_round_trip():
    book = book_from_mapping({"currency": "GBP", "timezone": LONDON, "tariff": [
        {"name": "Cap", "effective_from": "2024-10-01", "kind": "flat", "import_price": 0.233333,
         "standing_charge": 0.580857, "tax_rate": 0.05, "levy_per_kwh": 0.001, "base_band": "any time"}]})
    (t,) = TariffBook.from_rows(book.to_rows()).default
    assert (t.standing_charge, t.tax_rate, t.levy_per_kwh, t.base_band) == (0.580857, 0.05, 0.001, "any time")
    with pytest.raises(ValueError, match="tax_rate is a fraction"):
        book_from_mapping({"currency": "GBP", "tariff": [
            {"effective_from": "2024-10-01", "import_price": 0.2, "tax_rate": 5}]})
    with pytest.raises(ValueError, match="standing_charge must be a finite number, 0 or more"):
        book_from_mapping({"currency": "GBP", "tariff": [
            {"effective_from": "2024-10-01", "import_price": 0.2, "standing_charge": -1}]})


FLAT = Tariff(datetime(2020, 1, 1, tzinfo=UTC), TariffKind.FLAT, "GBP", "UTC", "Flat", import_price=0.25,
              standing_charge=0.50, tax_rate=0.05)


def _steady(start: datetime, end: datetime, watts: float) -> pl.DataFrame:
    n = int((end - start) / timedelta(minutes=1))
    return _frame(start, [watts / 60] * n, timedelta(minutes=1))


def test_month_to_date_and_the_projection_from_forecasts_then_the_average_day():
    as_of = datetime(2024, 11, 11, 12, 0, tzinfo=UTC)  # 10.5 days of November behind
    actual = _steady(datetime(2024, 10, 20, tzinfo=UTC), as_of, 500.0)
    forecasts = pl.DataFrame({"target_ts": [as_of + timedelta(hours=h) for h in range(24)],
                              "resolution_min": [60] * 24, "yhat_w": [1000.0] * 24},
                             schema={"target_ts": pl.Datetime("us", "UTC"), "resolution_min": pl.Int64,
                                     "yhat_w": pl.Float64})
    mb = month_bill((FLAT,), actual, forecasts, as_of, "UTC", "h")
    assert mb.month == "2024-11"
    assert mb.to_date.import_kwh == Decimal("126.000")  # 252 h x 0.5 kW
    assert mb.to_date.days == 11  # today's standing charge is owed from midnight
    assert mb.basis is Basis.FORECAST_AND_AVERAGE
    assert "next 24 hours" in mb.basis_text and "(12.0 kWh imported a day, by hour of day)" in mb.basis_text
    # the rest of November is 468 h: 24 h forecast at 1 kW, then 444 h of the 0.5 kW average day
    assert mb.projected_rest_kwh == pytest.approx(24 + 222)
    assert mb.projected.import_kwh == Decimal("372.000") and mb.projected.days == 30
    # 372 kWh x 0.25 = 93.00; 30 x 0.50 = 15.00; VAT 5.40
    assert mb.projected.total == Decimal("113.40")
    # without forecasts: the average day only, and it says so
    none = forecasts.clear()
    avg = month_bill((FLAT,), actual, none, as_of, "UTC", "h")
    assert avg.basis is Basis.AVERAGE and avg.projected.import_kwh == Decimal("360.000")
    # without history either: nothing to project, and it says so
    bare = month_bill((FLAT,), actual.filter(pl.col("bucket") >= as_of - timedelta(hours=2)), none, as_of, "UTC")
    assert bare.basis is Basis.NONE and bare.projected.import_kwh == bare.to_date.import_kwh
    assert "Not enough data" in bare.basis_text
    # ... and its words match its figures: the energy so far, every day's standing charge.
    assert "standing charge of every day of the month" in bare.basis_text


def test_budget_alert_when_the_projection_or_the_month_so_far_exceeds_the_budget():
    as_of = datetime(2024, 11, 11, 12, 0, tzinfo=UTC)
    actual = _steady(datetime(2024, 10, 20, tzinfo=UTC), as_of, 500.0)
    mb = month_bill((FLAT,), actual, pl.DataFrame(schema={"target_ts": pl.Datetime("us", "UTC"),
                                                          "resolution_min": pl.Int64, "yhat_w": pl.Float64}),
                    as_of, "UTC", "h")
    projected, so_far = mb.projected.due, mb.to_date.due
    assert (projected, so_far) == (Decimal("110.25"), Decimal("38.85"))
    assert budget_alert(mb, None, as_of) is None
    assert budget_alert(mb, projected, as_of) is None  # exactly on budget is not over it
    alert = budget_alert(mb, Decimal("100"), as_of)
    assert alert is not None and alert.kind is BudgetAlertKind.PROJECTED
    assert (alert.home_id, alert.month, alert.budget, alert.projected, alert.to_date, alert.basis) == (
        "h", "2024-11", 100.0, 110.25, 38.85, "average")
    assert alert.message == ("This month's electricity is projected to cost £110.25, over the budget of "
                             "£100.00 (£38.85 so far).")
    over = budget_alert(mb, 30, as_of, locale="de_DE")
    assert over is not None and over.kind is BudgetAlertKind.EXCEEDED
    assert "38,85\xa0£" in over.message and "30,00\xa0£" in over.message


def test_device_costs_apportion_the_energy_charges_with_tax():
    t0 = datetime(2024, 11, 1, tzinfo=UTC)
    usage = pl.DataFrame({"device_id": ["fridge", "fridge", "kettle", "pv"],
                          "bucket": [t0, t0 + timedelta(minutes=1), t0, t0],
                          "energy_wh": [1000.0, 1000.0, 500.0, -3000.0]},
                         schema={"device_id": pl.Utf8, "bucket": pl.Datetime("us", "UTC"), "energy_wh": pl.Float64})
    got = {r["device_id"]: (r["kwh"], r["cost"]) for r in device_costs((FLAT,), usage).iter_rows(named=True)}
    assert got.keys() == {"fridge", "kettle"}
    assert got["fridge"] == pytest.approx((2.0, 2 * 0.25 * 1.05))
    assert got["kettle"] == pytest.approx((0.5, 0.5 * 0.25 * 1.05))


def test_energy_before_the_first_tariff_is_refused_with_the_tariff_module_s_message():
    start, end = month_span(2019, 12, "UTC")
    with pytest.raises(ValueError, match="first tariff starts"):
        bill((FLAT,), _steady(start, start + timedelta(hours=1), 100.0), start, end, "UTC")
