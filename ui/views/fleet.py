"""Fleet (operators): every home's demand now and forecast, the homes one page at a time (biggest
consumers first, searchable by home or device id), homes with open anomalies, silent meters, the
pipeline's health and the measured savings. Every number is one SQL aggregate or a read of a
rollup the store keeps (fleet_1m for the demand), so the page issues the same statements with
10,000 homes as with two (tests/test_fleet_queries.py; timings: tests/bench/bench_viewer.py --fleet)."""

import polars as pl
import streamlit as st

from ui import charts, data, fmt
from ui.auth import AccessDenied, Principal
from ui.common import now, principal, refusals, user_locale, viewer
from ui.db import Database
from ui.safe import md_escape

ORDERS = {"kWh today": "today_kwh", "home id": "home_id"}
PAGE_SIZES = [10, 25, 50, 100]
DEFAULT_PAGE_SIZE = 25
# Every click (a page, a search) reruns this script; the fleet's totals, demand and forecast change
# once a minute at most, so they are read again only after this long.
SUMMARY_TTL_S = 15


@st.cache_data(ttl=SUMMARY_TTL_S, show_spinner=False, max_entries=64)
def _fleet(url: str, _db: Database, who: Principal, stale_after_s: float,
           silent_after_s: float) -> data.Fleet:
    # Keyed by the principal too: data.fleet checks it, and a refusal is never cached.
    return data.fleet(_db, who, now(), stale_after_s, silent_after_s)


@st.cache_data(ttl=SUMMARY_TTL_S, show_spinner=False, max_entries=256)
def _homes(url: str, _db: Database, who: Principal, as_of, stale_after_s: float, search: str,
           page: int, page_size: int, order: str) -> data.FleetHomes:
    # Keyed by the summary's time, so a page seen again within its TTL (back to the first page,
    # a search undone) is not read again, and every page shown beside one summary is of its time.
    return data.fleet_homes(_db, who, as_of, stale_after_s, search=search, page=page,
                            page_size=page_size, order=order)


v = viewer()
p = principal()
st.title("Fleet")
with refusals():
    f = _fleet(v.settings.store_url, v.db, p, v.settings.stale_after_s, v.settings.silent_after_s)

m1, m2, m3, m4 = st.columns(4)
m1.metric("Demand now", f"{f.demand_w / 1000:,.1f} kW",
          help=f"Sum over homes with a reading in the last {v.settings.stale_after_s:g} s.")
m2.metric("Homes reporting", f"{f.homes_fresh} / {f.homes_total}")
m3.metric("Homes with open anomalies", f"{f.homes_with_open_anomalies}")
m4.metric("Silent meters", f"{f.silent_meters_total}",
          help=f"Meters without a reading for {v.settings.silent_after_s / 60:g} minutes.")

st.subheader("Demand, last 24 h and forecast")
st.caption(f"Fleet figures as of {f.as_of:%H:%M:%S} UTC (read again every {SUMMARY_TTL_S} s).")
st.plotly_chart(charts.fleet_demand(f.demand, f.forecast), config=charts.CONFIG, key="demand")
if f.forecast.height:
    st.caption(f"Forecast: sum of the newest hourly forecasts of {f.forecast_homes:,} "
               f"home{'' if f.forecast_homes == 1 else 's'}.")

st.subheader("Pipeline health")
h1, h2, h3, h4 = st.columns(4)
# The unit in the label: "0.0 readings/s" did not fit a quarter of the page's width.
h1.metric("Ingest (readings/s)", f"{f.ingest_per_s:,.1f}", help="Readings stamped in the last 5 minutes.")
lag = None if f.newest_reading is None else (f.as_of - f.newest_reading).total_seconds()
h2.metric("Newest reading", "—" if lag is None else f"{lag:,.0f} s ago")
agg = None if f.newest_minute is None else (f.as_of - f.newest_minute).total_seconds() - 60
h3.metric("Aggregation lag", "—" if agg is None else f"{max(0.0, agg):,.0f} s",
          help="How far the newest stored home minute trails the clock (a minute is stored "
               "about two minutes after it ends).")
h4.metric("Dead letters (1 h)", f"{f.dead_letters_hour:,}")
if lag is not None and lag > v.settings.stale_after_s:
    st.warning(f"No reading for {lag / 60:,.0f} minutes: is the flow running?")
if f.dead_letter_reasons.height:
    with st.expander("Why messages were dead-lettered (last hour)"):
        st.dataframe(f.dead_letter_reasons, hide_index=True)



def _first_page() -> None:
    st.session_state["fleet_page"] = 1


st.subheader("Homes")
c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
search = c1.text_input("Search by home or device id", key="fleet_search", on_change=_first_page,
                       placeholder="part of an id, e.g. 0042 or heat_pump")
order = c2.selectbox("Order", list(ORDERS), key="fleet_order", on_change=_first_page)
size = c3.selectbox("Per page", PAGE_SIZES, index=PAGE_SIZES.index(DEFAULT_PAGE_SIZE),
                    key="fleet_page_size", on_change=_first_page)
page = c4.number_input("Page", min_value=1, step=1, key="fleet_page")
with refusals():
    homes = _homes(v.settings.store_url, v.db, p, f.as_of, v.settings.stale_after_s, search,
                   int(page) - 1, int(size), ORDERS[order])
st.dataframe(homes.rows.select(
    pl.col("home_id").alias("Home"), pl.col("today_kwh").round(2).alias("kWh today"),
    pl.col("power_w").round(0).alias("W now"), pl.col("open_anomalies").alias("Open anomalies")), hide_index=True)
shown = homes.rows.height
first = homes.page * homes.page_size + 1
st.caption(f"Homes {first:,}–{first + shown - 1:,} of {homes.total:,} (page {homes.page + 1} of "
           f"{homes.pages})" if shown else "No home matches.")

left, right = st.columns(2)
with left:
    st.subheader("Homes with open anomalies")
    if f.anomalies.is_empty():
        st.caption("None.")
    else:
        st.dataframe(f.anomalies.select(pl.col("home_id").alias("Home"), pl.col("open").alias("Open"),
                                        pl.col("since").alias("Since (UTC)")), hide_index=True)
        if f.homes_with_open_anomalies > f.anomalies.height:
            st.caption(f"The {f.anomalies.height} with most of {f.homes_with_open_anomalies:,}.")
with right:
    st.subheader("Silent meters")
    if f.silent_meters.is_empty():
        st.caption("None.")
    else:
        st.dataframe(f.silent_meters, hide_index=True)
        if f.silent_meters_total > f.silent_meters.height:
            st.caption(f"The {f.silent_meters.height} silent longest of {f.silent_meters_total:,}.")

SAVINGS_TTL_S = 3600  # measured over days: an hour-old figure is as good as a fresh one


@st.cache_data(ttl=SAVINGS_TTL_S, show_spinner="Measuring the savings of accepted recommendations…",
               max_entries=8)
def _savings(url: str, _db: Database, who: Principal):
    return data.fleet_savings(_db, who)


st.subheader("Measured savings of accepted recommendations")
measured = None
with refusals():
    try:
        measured = _savings(v.settings.store_url, v.db, p)
    except AccessDenied:
        raise
    except Exception as exc:  # noqa: BLE001 - a measurement that fails must not take the page down
        st.caption(f"Savings could not be measured: {md_escape(str(exc))}")
if measured is not None and not measured[0]:
    st.caption("No recommendation has been accepted yet.")
elif measured is not None:
    results, fleet_summary = measured
    measuring = sum(1 for m in results if m.state == "measuring")
    unmeasurable = sum(1 for m in results if m.state == "not measurable")
    s1, s2, s3, s4 = st.columns(4)
    currency = next((m.currency for m in results if m.currency), "")
    s1.metric("Measured", f"{fleet_summary.measured} of {len(results)}",
              help=f"{measuring} still measuring (14 days needed), {unmeasurable} without enough history.")
    loc = user_locale(v)

    def money(amount: float) -> str:
        return fmt.money(amount, currency, loc) if currency else fmt.number(amount, loc, 2)

    s2.metric("Saved in all", money(fleet_summary.total_money),
              help="Baseline minus actual, summed over the measured recommendations.")
    s3.metric("Median a month", money(fleet_summary.median_money_per_month),
              help=f"10-90 %: {money(fleet_summary.p10_money_per_month)} to "
                   f"{money(fleet_summary.p90_money_per_month)}.")
    s4.metric("Promises kept", f"{fleet_summary.promises_kept} of {fleet_summary.measured}",
              help="Measured saving a month at least the promised one; "
                   f"{fleet_summary.significant} distinguishable from no change at 90 %.")
    st.caption(f"Baseline vs actual, as `shems savings` measures it (read again every {SAVINGS_TTL_S // 60} minutes).")
