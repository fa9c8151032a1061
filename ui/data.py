"""The viewer's read queries, as polars frames. Authorisation is enforced here: every function
takes the signed-in principal and checks the home (``require_home``) or the role before it runs
any SQL, so a page cannot show what its user may not see even if a widget or the URL asks for it.

Aggregation happens in SQL (grouping minutes into 15-minute or hourly buckets) and in polars
(local days, profiles, the unmetered band, percentiles), never in Python loops over rows.

Energy of a band is the sum of its 1-minute mean powers / 60 (Wh of the minutes present), so the
bands of one bucket add up exactly and a gap in the data adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import cast
from zoneinfo import ZoneInfo

import polars as pl

from pipeline.energy.device_control import SWITCHABLE_KINDS
from pipeline.records import DeviceKind
from sinks.rows import from_us
from ui.accounts import Accounts
from ui.auth import Principal, require_admin, require_fleet, require_home, require_owner
from ui.cost import Pricing
from ui.db import TS, Database, Schema

UNMETERED = "unmetered"  # the band: the meter's total minus its sub-metered devices
RESOLUTIONS: dict[str, int] = {"1 min": 60, "15 min": 900, "1 hour": 3600, "1 day": 86400}
MAX_POINTS = 3000  # per series; a finer resolution over a longer range is coarsened
PRICE_STEP_S = 900


# ---------------------------------------------------------------------------- homes and devices

def homes_for(db: Database, principal: Principal) -> list[str]:
    """The homes this user may pick: their own, or (operators) every home in the store."""
    if not principal.sees_fleet:
        return sorted(principal.homes)
    rows = db.rows("SELECT DISTINCT home_id FROM devices ORDER BY home_id")
    return [h for (h,) in rows]


def home_timezone(db: Database, principal: Principal, home_id: str, fallback: str) -> str:
    """The home's own time zone (from its device registry) when known, else ``fallback``."""
    require_home(principal, home_id)
    rows = db.rows("SELECT timezone FROM devices WHERE home_id = :h AND timezone IS NOT NULL "
                   "ORDER BY device_id LIMIT 1", {"h": home_id})
    return rows[0][0] if rows else fallback


def newest_reading(db: Database, principal: Principal, home_id: str) -> datetime | None:
    """The time of the home's newest reading (``devices.last_seen``), None before the first."""
    require_home(principal, home_id)
    (newest,) = db.rows(f"SELECT {db.us('max(last_seen)')} FROM devices WHERE home_id = :h",
                        {"h": home_id})[0]
    return from_us(newest)


DEVICE_SCHEMA: Schema = {"device_id": pl.Utf8, "kind": pl.Utf8, "last_seen": TS, "power_w": pl.Float64}


def devices_now(db: Database, principal: Principal, home_id: str) -> pl.DataFrame:
    """Each device of the home with its newest reading (``devices.last_seen`` is that reading's
    time, so this is one index probe per device whatever the history's length)."""
    require_home(principal, home_id)
    return db.frame(
        f"SELECT d.device_id, d.kind, {db.us('d.last_seen')} AS last_seen, r.power_w "
        "FROM devices d LEFT JOIN readings r ON r.home_id = d.home_id "
        "AND r.device_id = d.device_id AND r.ts = d.last_seen "
        "WHERE d.home_id = :h ORDER BY d.device_id", {"h": home_id}, DEVICE_SCHEMA,
    ).with_columns(pl.col("kind").is_in([k.value for k in SWITCHABLE_KINDS]).alias("switchable"))


def home_power(devices: pl.DataFrame) -> float | None:
    """A home's power from its devices' newest readings: its meters when it has any (appliances
    are sub-loads), else the sum of its devices — the pipeline's rule for home totals."""
    known = devices.filter(pl.col("power_w").is_not_null())
    if known.is_empty():
        return None
    meters = known.filter(pl.col("kind") == DeviceKind.METER.value)
    return float((meters if not meters.is_empty() else known)["power_w"].sum())


# ---------------------------------------------------------------------------- usage bands

def _bucket_us(db: Database, column: str, step_s: int) -> str:
    if db.dialect == "sqlite":
        return f"({column} - {column} % {step_s * 1_000_000})"
    return f"(floor(extract(epoch FROM {column}) / {step_s}) * {step_s * 1_000_000})::bigint"


# The primary key is (home_id, device_id, bucket): naming the devices lets both databases seek
# each device's time range instead of scanning the home's whole history for the bucket range.
_HOME_DEVICES = "home_id = :h AND device_id IN (SELECT device_id FROM devices WHERE home_id = :h)"

USAGE_SCHEMA: Schema = {"device_id": pl.Utf8, "kind": pl.Utf8, "bucket": TS, "wh": pl.Float64,
                "minutes": pl.Int64}


def _device_usage(db: Database, home_id: str, start: datetime, end: datetime,
                  step_s: int) -> pl.DataFrame:
    """Wh per device and bucket of ``step_s`` (60, 900 or 3600 s), grouped in SQL. Whole hours
    come from the hourly rollup ``device_1h`` (a table the store keeps current, or TimescaleDB's
    continuous aggregate), so a year is ~9k rows per device rather than ~525k minutes."""
    if step_s == 3600:
        first = _ceil_hour(start)
        last = max(first, end.replace(minute=0, second=0, microsecond=0))
        if first < last:
            parts = [_minute_usage(db, home_id, start, first, step_s),
                     _hourly_usage(db, home_id, first, last),
                     _minute_usage(db, home_id, last, end, step_s)]
            return pl.concat([p for p in parts if not p.is_empty()] or [parts[1]], how="vertical")
    return _minute_usage(db, home_id, start, end, step_s)


def _ceil_hour(ts: datetime) -> datetime:
    floor = ts.replace(minute=0, second=0, microsecond=0)
    return floor if floor == ts else floor + timedelta(hours=1)


def _hourly_usage(db: Database, home_id: str, start: datetime, end: datetime) -> pl.DataFrame:
    return db.frame(
        f"SELECT h.device_id, d.kind, {db.us('h.bucket')} AS bucket, h.power_wh AS wh, "
        f"h.minutes FROM device_1h h JOIN devices d ON d.home_id = h.home_id "
        f"AND d.device_id = h.device_id WHERE h.home_id = :h AND h.bucket >= :s AND h.bucket < :e",
        {"h": home_id, "s": start, "e": end}, USAGE_SCHEMA)


def _minute_usage(db: Database, home_id: str, start: datetime, end: datetime,
                  step_s: int) -> pl.DataFrame:
    if end <= start:
        return pl.DataFrame(schema=USAGE_SCHEMA)
    params = {"h": home_id, "s": start, "e": end}
    if step_s == 60:
        return db.frame(
            f"SELECT device_id, kind, {db.us('bucket')} AS bucket, mean_power_w / 60.0 AS wh, "
            f"1 AS minutes FROM device_1m WHERE {_HOME_DEVICES} AND bucket >= :s AND bucket < :e",
            params, USAGE_SCHEMA)
    # Aliased "b", not "bucket": a GROUP BY naming "bucket" would be ambiguous with the column.
    b = _bucket_us(db, "bucket", step_s)
    return db.frame(
        f"SELECT device_id, max(kind) AS kind, {b} AS b, sum(mean_power_w) / 60.0 AS wh, "
        f"count(*) AS minutes FROM device_1m WHERE {_HOME_DEVICES} AND bucket >= :s AND bucket < :e "
        f"GROUP BY device_id, {b}", params,
        {"device_id": pl.Utf8, "kind": pl.Utf8, "b": TS, "wh": pl.Float64, "minutes": pl.Int64},
    ).rename({"b": "bucket"})


def with_unmetered(usage: pl.DataFrame) -> pl.DataFrame:
    """The meter replaced by its remainder: per bucket, the meter's Wh minus the Wh of every
    sub-metered device (PV is negative, so its generation is added back), never below zero.
    A home without a meter keeps its devices as they are."""
    meters = usage.filter(pl.col("kind") == DeviceKind.METER.value)
    subs = usage.filter(pl.col("kind") != DeviceKind.METER.value)
    if meters.is_empty():
        return subs
    meter = meters.group_by("bucket").agg(pl.col("wh").sum(), pl.col("minutes").max())
    sub = subs.group_by("bucket").agg(pl.col("wh").sum().alias("sub_wh"))
    rest = (meter.join(sub, on="bucket", how="left")
            .select(pl.lit(UNMETERED).alias("device_id"), pl.lit(UNMETERED).alias("kind"), "bucket",
                    (pl.col("wh") - pl.col("sub_wh").fill_null(0.0)).clip(lower_bound=0.0).alias("wh"),
                    "minutes"))
    return pl.concat([subs, rest.cast(subs.schema)], how="vertical")


def _priced(bands: pl.DataFrame, pricing: Pricing, home_id: str) -> pl.DataFrame:
    priced = pricing.price(bands.with_columns(pl.lit(home_id).alias("home_id"),
                                              pl.col("wh").alias("energy_wh")))
    return priced.drop("home_id", "energy_wh", "import_price", "export_price")


def _to_resolution(bands: pl.DataFrame, step_s: int, tz: str) -> pl.DataFrame:
    """Bands of a finer bucket summed into ``step_s`` buckets; days are local days."""
    if step_s < 86400:
        key = pl.col("bucket").dt.truncate(f"{step_s}s")
    else:
        key = (pl.col("bucket").dt.convert_time_zone(tz).dt.truncate("1d")
               .dt.convert_time_zone("UTC"))
    return (bands.group_by("device_id", "kind", key.alias("bucket"))
            .agg(pl.col("wh").sum(), pl.col("cost").sum(), pl.col("minutes").sum())
            .sort("bucket", "device_id"))


def pick_resolution(start: datetime, end: datetime, wanted_s: int | None) -> tuple[int, str]:
    """The bucket size for a range: the one asked for unless it gives more than MAX_POINTS
    points per series, else the finest that does not. ``None`` means automatic."""
    span = (end - start).total_seconds()
    steps = sorted(RESOLUTIONS.values())
    fitting = [s for s in steps if span / s <= MAX_POINTS]
    best = fitting[0] if fitting else steps[-1]
    if wanted_s is None:
        return best, ""
    if wanted_s < best:
        name = {v: k for k, v in RESOLUTIONS.items()}
        return best, (f"{name[wanted_s]} over this range would draw {span / wanted_s:,.0f} points "
                      f"per device; showing {name[best]}.")
    return wanted_s, ""


@dataclass(frozen=True, slots=True)
class History:
    home_id: str
    start: datetime
    end: datetime
    step_s: int
    note: str
    bands: pl.DataFrame  # device_id, kind, bucket, wh, cost, minutes at step_s
    totals: pl.DataFrame  # device_id, kind, kwh, cost, share, prev_kwh, prev_cost, change (ranked)
    daily_profile: pl.DataFrame  # day, hour, mean_w (local time)
    weekly_profile: pl.DataFrame  # weekday (1 = Monday), hour, mean_w
    base_load_w: float | None
    base_load_cost_per_year: float | None
    total_kwh: float
    total_cost: float
    prev_total_kwh: float
    prev_total_cost: float
    currency: str
    pricing_source: str
    # Comparison with the period before, over the quarter-hours both periods have data for only
    # (a week with one day of data is not "95 % less"): shares of the period's quarter-hours.
    coverage: float  # this period has data
    prev_coverage: float  # the previous period has data
    common_coverage: float  # both have data: what the comparison covers
    common_kwh: float  # this period's energy in those quarter-hours
    prev_common_kwh: float
    common_cost: float
    prev_common_cost: float


def history(db: Database, principal: Principal, home_id: str, start: datetime, end: datetime,
            wanted_step_s: int | None, tz: str, pricing: Pricing, period: timedelta | None = None) -> History:
    """The home's usage from ``start`` to ``end``, compared with the same stretch one ``period``
    earlier. ``period`` is the length of the days picked (default: ``end - start``): a day whose
    end is clipped to now is compared with the same hours of the day before, not with the hours
    that end where it starts (today 00:00-08:20 against yesterday 15:40-24:00 said +43 % where
    the home used half as much)."""
    require_home(principal, home_id)
    if end <= start:
        raise ValueError("the end of the range must be after its start")
    step_s, note = pick_resolution(start, end, wanted_step_s)
    span = end - start
    shift = period if period is not None and period >= span else span
    # Costs are priced per bucket at its start: 15-minute buckets are exact for time-of-use and
    # half-hourly dynamic tariffs; beyond a month, hourly keeps the query small (and a period
    # boundary at half past is then priced at the hour).
    fetch_s = min(step_s, PRICE_STEP_S if span <= timedelta(days=31) else 3600)
    bands = _priced(with_unmetered(_device_usage(db, home_id, start, end, fetch_s)), pricing, home_id)
    shown = bands if step_s == fetch_s else _to_resolution(bands, step_s, tz)
    prev = _priced(with_unmetered(_device_usage(db, home_id, start - shift, end - shift,
                                                max(fetch_s, PRICE_STEP_S))), pricing, home_id)
    consumption = pl.col("wh").clip(lower_bound=0.0)
    this_tot = bands.group_by("device_id", "kind").agg((consumption.sum() / 1000).alias("kwh"),
                                                       pl.col("cost").sum())
    prev_tot = prev.group_by("device_id").agg((consumption.sum() / 1000).alias("prev_kwh"),
                                              pl.col("cost").sum().alias("prev_cost"))
    slot_s = max(fetch_s, PRICE_STEP_S)  # the previous period's resolution
    this_q, prev_q = _quarters(bands, start, slot_s), _quarters(prev, start - shift, slot_s)
    slots = max(1, -(-int(span.total_seconds()) // slot_s))
    covered = this_q.select("slot").unique()
    prev_covered = prev_q.select("slot").unique()
    common = covered.join(prev_covered, on="slot", how="inner")
    this_common = _over(this_q, common, "common_kwh", "common_cost")
    prev_common = _over(prev_q, common, "prev_common_kwh", "prev_common_cost")
    totals = (this_tot.join(prev_tot, on="device_id", how="full", coalesce=True)
              .join(this_common, on="device_id", how="left")
              .join(prev_common, on="device_id", how="left")
              .with_columns(pl.col("kind").fill_null("appliance"),
                            pl.col("kwh", "cost", "prev_kwh", "prev_cost", "common_kwh", "common_cost",
                                   "prev_common_kwh", "prev_common_cost").fill_null(0.0))
              .with_columns((pl.col("kwh") / pl.col("kwh").sum()).fill_nan(0.0).alias("share"),
                            pl.when(pl.col("prev_common_kwh") > 0)
                            .then(pl.col("common_kwh") / pl.col("prev_common_kwh") - 1).alias("change"))
              .filter(pl.col("kind") != DeviceKind.PV.value)
              .sort("kwh", descending=True))
    hourly = _hourly_home(bands, tz)
    base_w = base_load(hourly)
    return History(
        home_id, start, end, step_s, note, shown, totals,
        daily_profile=hourly.select(pl.col("local").dt.date().alias("day"),
                                    pl.col("local").dt.hour().alias("hour"), "mean_w"),
        weekly_profile=(hourly.group_by(pl.col("local").dt.weekday().alias("weekday"),
                                        pl.col("local").dt.hour().alias("hour"))
                        .agg(pl.col("mean_w").mean()).sort("weekday", "hour")),
        base_load_w=base_w,
        base_load_cost_per_year=None if base_w is None
        else base_w / 1000 * 8760 * pricing.mean_import_price(home_id, end),
        total_kwh=float(this_tot["kwh"].sum()), total_cost=float(this_tot["cost"].sum()),
        prev_total_kwh=float(prev_tot["prev_kwh"].sum()),
        prev_total_cost=float(prev_tot["prev_cost"].sum()),
        currency=pricing.currency, pricing_source=pricing.source,
        coverage=min(1.0, covered.height / slots), prev_coverage=min(1.0, prev_covered.height / slots),
        common_coverage=min(1.0, common.height / slots),
        common_kwh=float(totals["common_kwh"].sum()), prev_common_kwh=float(totals["prev_common_kwh"].sum()),
        common_cost=float(totals["common_cost"].sum()),
        prev_common_cost=float(totals["prev_common_cost"].sum()),
    )


def _quarters(bands: pl.DataFrame, origin: datetime, slot_s: int) -> pl.DataFrame:
    """Energy and cost per device and slot of ``slot_s`` (a quarter-hour, or an hour beyond a
    month) of the period (slot 0 starts at ``origin``), slots without a minute of data left out."""
    slot = ((pl.col("bucket") - pl.lit(origin)).dt.total_seconds() // slot_s).alias("slot")
    return (bands.filter(pl.col("minutes") > 0)
            .group_by("device_id", slot)
            .agg(pl.col("wh").clip(lower_bound=0.0).sum(), pl.col("cost").sum()))


def _over(quarters: pl.DataFrame, slots: pl.DataFrame, kwh: str, cost: str) -> pl.DataFrame:
    return (quarters.join(slots, on="slot", how="semi").group_by("device_id")
            .agg((pl.col("wh").sum() / 1000).alias(kwh), pl.col("cost").sum().alias(cost)))


def _hourly_home(bands: pl.DataFrame, tz: str) -> pl.DataFrame:
    """The home's consumption per local hour as mean power over the minutes with data."""
    per_device = (bands.filter(pl.col("kind") != DeviceKind.PV.value)
                  .group_by("device_id", pl.col("bucket").dt.truncate("1h").alias("bucket"))
                  .agg(pl.col("wh").clip(lower_bound=0.0).sum(), pl.col("minutes").sum()))
    return (per_device.group_by("bucket")
            .agg(pl.col("wh").sum(), pl.col("minutes").max())
            .with_columns((pl.col("wh") * 60 / pl.col("minutes")).alias("mean_w"),
                          pl.col("bucket").dt.convert_time_zone(tz).alias("local"))
            .sort("bucket"))


def base_load(hourly: pl.DataFrame, min_hours: int = 24) -> float | None:
    """The always-on load: the 5th percentile of the home's hourly mean power over hours with at
    least 45 minutes of data (the quietest hours, nights, without one odd minute deciding)."""
    full = hourly.filter(pl.col("minutes") >= 45)
    if full.height < min_hours:
        return None
    quietest = full["mean_w"].quantile(0.05, "linear")
    return None if quietest is None else float(quietest)


# ---------------------------------------------------------------------------- live

@dataclass(frozen=True, slots=True)
class Live:
    home_id: str
    as_of: datetime
    devices: pl.DataFrame  # device_id, kind, last_seen, power_w, switchable, today_kwh, today_cost
    power_w: float | None
    newest: datetime | None
    stale: bool
    today_kwh: float
    today_cost: float
    recent: pl.DataFrame  # bucket, mean_power_w: the home's last two hours
    currency: str


def local_midnight(now: datetime, tz: str) -> datetime:
    local = now.astimezone(ZoneInfo(tz))
    return datetime.combine(local.date(), time(0), ZoneInfo(tz)).astimezone(timezone.utc)


def live(db: Database, principal: Principal, home_id: str, now: datetime, tz: str,
         pricing: Pricing, stale_after_s: float) -> Live:
    require_home(principal, home_id)
    devices = devices_now(db, principal, home_id)
    midnight = local_midnight(now, tz)
    usage = _device_usage(db, home_id, midnight, now + timedelta(minutes=1), PRICE_STEP_S)
    # Every device's own energy, the meter's too, plus the unmetered remainder.
    meters = usage.filter(pl.col("kind") == DeviceKind.METER.value)
    today = _priced(pl.concat([meters, with_unmetered(usage)], how="vertical"), pricing, home_id)
    per_device = today.group_by("device_id").agg((pl.col("wh").sum() / 1000).alias("today_kwh"),
                                                  pl.col("cost").sum().alias("today_cost"))
    home_hours = db.frame(
        f"SELECT {_bucket_us(db, 'bucket', PRICE_STEP_S)} AS bucket, sum(energy_wh) AS wh, "
        "count(*) AS minutes FROM home_1m WHERE home_id = :h AND bucket >= :s "
        f"GROUP BY {_bucket_us(db, 'bucket', PRICE_STEP_S)}",
        {"h": home_id, "s": midnight}, {"bucket": TS, "wh": pl.Float64, "minutes": pl.Int64})
    priced_home = _priced(home_hours, pricing, home_id)
    recent = db.frame(f"SELECT {db.us('bucket')} AS bucket, mean_power_w FROM home_1m "
                      "WHERE home_id = :h AND bucket >= :s ORDER BY bucket",
                      {"h": home_id, "s": now - timedelta(hours=2)},
                      {"bucket": TS, "mean_power_w": pl.Float64})
    newest = cast(datetime | None, devices["last_seen"].max())  # a TS column
    unmetered = per_device.filter(pl.col("device_id") == UNMETERED)
    # A device that used nothing since midnight used 0 kWh today (not "unknown").
    rows = devices.join(per_device, on="device_id", how="left").with_columns(
        pl.col("today_kwh").fill_null(0.0), pl.col("today_cost").fill_null(0.0))
    if not unmetered.is_empty():
        rows = pl.concat([rows, unmetered.with_columns(
            pl.lit(UNMETERED).alias("kind"), pl.lit(None, TS).alias("last_seen"),
            pl.lit(None, pl.Float64).alias("power_w"), pl.lit(False).alias("switchable"))
            .select(rows.columns)], how="vertical")
    return Live(
        home_id, now, rows, home_power(devices), newest,
        stale=newest is None or (now - newest).total_seconds() > stale_after_s,
        today_kwh=float(home_hours["wh"].sum()) / 1000, today_cost=float(priced_home["cost"].sum()),
        recent=recent, currency=pricing.currency,
    )


# ---------------------------------------------------------------------------- forecast

@dataclass(frozen=True, slots=True)
class ForecastView:
    home_id: str
    resolution_min: int
    made_at: datetime
    model: str
    forecast: pl.DataFrame  # target_ts, yhat_w, lower_w, upper_w
    actual: pl.DataFrame  # bucket, mean_w at the forecast's resolution, from a day before made_at
    scores: pl.DataFrame  # horizon_min, model, n, mae_w, naive_day_mae_w, naive_week_mae_w, coverage
    error_so_far_w: float | None  # MAE of this forecast over its slots already over


def forecast_resolutions(db: Database, principal: Principal, home_id: str) -> list[int]:
    require_home(principal, home_id)
    return [r for (r,) in db.rows("SELECT DISTINCT resolution_min FROM forecasts WHERE home_id = :h "
                                  "ORDER BY resolution_min", {"h": home_id})]


def forecast(db: Database, principal: Principal, home_id: str, resolution_min: int,
             now: datetime) -> ForecastView | None:
    """The newest forecast of the home at this resolution, with what actually happened."""
    require_home(principal, home_id)
    latest = db.rows(f"SELECT {db.us('max(made_at)')} FROM forecasts "
                     "WHERE home_id = :h AND resolution_min = :r", {"h": home_id, "r": resolution_min})
    if not latest or latest[0][0] is None:
        return None
    made_at = from_us(latest[0][0])
    rows = db.frame(f"SELECT {db.us('target_ts')} AS target_ts, yhat_w, lower_w, upper_w, model "
                    "FROM forecasts WHERE home_id = :h AND resolution_min = :r AND made_at = :m "
                    "ORDER BY target_ts", {"h": home_id, "r": resolution_min, "m": made_at},
                    {"target_ts": TS, "yhat_w": pl.Float64, "lower_w": pl.Float64,
                     "upper_w": pl.Float64, "model": pl.Utf8})
    step = resolution_min * 60
    b = _bucket_us(db, "bucket", step)
    actual = db.frame(f"SELECT {b} AS bucket, avg(mean_power_w) AS mean_w, count(*) AS minutes "
                      "FROM home_1m WHERE home_id = :h AND bucket >= :s AND bucket < :e "
                      f"GROUP BY {b} ORDER BY 1",
                      {"h": home_id, "s": made_at - timedelta(days=1), "e": now},
                      {"bucket": TS, "mean_w": pl.Float64, "minutes": pl.Int64})
    scores = db.frame("SELECT horizon_min, model, n, mae_w, naive_day_mae_w, naive_week_mae_w, "
                      "coverage FROM forecast_scores WHERE home_id = :h AND resolution_min = :r "
                      "ORDER BY horizon_min", {"h": home_id, "r": resolution_min},
                      {"horizon_min": pl.Int64, "model": pl.Utf8, "n": pl.Int64, "mae_w": pl.Float64,
                       "naive_day_mae_w": pl.Float64, "naive_week_mae_w": pl.Float64,
                       "coverage": pl.Float64})
    # Only slots that are over and (nearly) fully measured count towards the error so far.
    done = (rows.join(actual, left_on="target_ts", right_on="bucket", how="inner")
            .filter((pl.col("target_ts") + pl.duration(minutes=resolution_min) <= now)
                    & (pl.col("minutes") >= 0.75 * resolution_min)))
    error = None if done.is_empty() else float(cast(float, (done["yhat_w"] - done["mean_w"]).abs().mean()))
    model = rows["model"][0] if rows.height else ""
    return ForecastView(home_id, resolution_min, made_at, model, rows.drop("model"),
                        actual.drop("minutes"), scores, error)


# ---------------------------------------------------------------------------- alerts

ANOMALY_SCHEMA: Schema = {"device_id": pl.Utf8, "kind": pl.Utf8, "started_at": TS, "ended_at": TS,
                  "score": pl.Float64, "message": pl.Utf8, "acknowledged_at": TS,
                  "acknowledged_by": pl.Utf8}
# Anomalies of one kind that start within this of each other are one event (a logger outage
# silences every device of the home at once): one alert, its devices listed.
GROUP_WITHIN = timedelta(minutes=10)


def anomalies(db: Database, principal: Principal, home_id: str, now: datetime,
              closed_within: timedelta | None = timedelta(days=7)) -> pl.DataFrame:
    """Open anomalies and those closed within ``closed_within`` of ``now`` (None: all), newest
    first, with their acknowledgement; ``open`` tells them apart."""
    require_home(principal, home_id)
    since = "" if closed_within is None else "AND (a.ended_at IS NULL OR a.ended_at >= :since) "
    params: dict[str, object] = {"h": home_id}
    if closed_within is not None:
        params["since"] = now - closed_within
    return db.frame(
        f"SELECT a.device_id, a.kind, {db.us('a.started_at')} AS started_at, "
        f"{db.us('a.ended_at')} AS ended_at, a.score, a.message, "
        f"{db.us('k.acknowledged_at')} AS acknowledged_at, k.acknowledged_by "
        "FROM anomalies a LEFT JOIN anomaly_acks k ON k.home_id = a.home_id "
        "AND k.device_id = a.device_id AND k.kind = a.kind AND k.started_at = a.started_at "
        f"WHERE a.home_id = :h {since}ORDER BY a.started_at DESC",
        params, ANOMALY_SCHEMA,
    ).with_columns(pl.col("ended_at").is_null().alias("open"))


def grouped_alerts(found: pl.DataFrame) -> pl.DataFrame:
    """One row per event: anomalies of one kind starting within ``GROUP_WITHIN`` of the one
    before are grouped (a home-wide outage is one alert listing its devices). Columns: kind,
    started_at, ended_at (None while any is open), open, devices (list), messages (list), score,
    acknowledged (all acknowledged), keys (the anomalies' (device_id, kind, started_at)), newest
    first."""
    schema: Schema = {"kind": pl.Utf8, "started_at": TS, "ended_at": TS, "open": pl.Boolean,
              "devices": pl.List(pl.Utf8), "messages": pl.List(pl.Utf8), "score": pl.Float64,
              "acknowledged": pl.Boolean, "acknowledged_by": pl.Utf8,
              "keys": pl.List(pl.Struct({"device_id": pl.Utf8, "kind": pl.Utf8, "started_at": TS}))}
    if found.is_empty():
        return pl.DataFrame(schema=schema)
    rows = found.sort("kind", "started_at")
    new_event = ((pl.col("kind") != pl.col("kind").shift(1))
                 | (pl.col("started_at").diff() > GROUP_WITHIN)).fill_null(True)
    return (rows.with_columns(new_event.cum_sum().alias("event"))
            .group_by("event")
            .agg(pl.col("kind").first(), pl.col("started_at").min(),
                 pl.when(pl.col("open").any()).then(None).otherwise(pl.col("ended_at").max())
                 .first().alias("ended_at"),
                 pl.col("open").any(), pl.col("device_id").alias("devices"),
                 pl.col("message").alias("messages"), pl.col("score").max(),
                 pl.col("acknowledged_at").is_not_null().all().alias("acknowledged"),
                 pl.col("acknowledged_by").drop_nulls().first(),
                 pl.struct("device_id", "kind", "started_at").alias("keys"))
            .drop("event").sort("started_at", descending=True)
            .cast(pl.Schema(schema)))


def acknowledge(db: Database, accounts: Accounts, principal: Principal, home_id: str,
                keys: list[dict]) -> int:
    """The household's acknowledgement of the anomalies ``keys`` (device_id, kind, started_at),
    recorded with who made it; acknowledging again keeps the first."""
    require_owner(principal, home_id)
    at = accounts.clock()
    n = 0
    with db.transaction() as tx:
        for k in keys:
            exists = tx.rows("SELECT 1 FROM anomaly_acks WHERE home_id = :h AND device_id = :d "
                             "AND kind = :k AND started_at = :s",
                             {"h": home_id, "d": k["device_id"], "k": k["kind"], "s": k["started_at"]})
            if exists:
                continue
            n += tx.execute("INSERT INTO anomaly_acks (home_id, device_id, kind, started_at, "
                            "acknowledged_at, acknowledged_by) VALUES (:h, :d, :k, :s, :at, :u)",
                            {"h": home_id, "d": k["device_id"], "k": k["kind"], "s": k["started_at"],
                             "at": at, "u": principal.username})
    if n:
        accounts.audit(principal.username, "anomaly_acknowledged", home_id, None,
                       f"{n} anomal{'y' if n == 1 else 'ies'}")
    return n


RECOMMENDATION_SCHEMA: Schema = {"kind": pl.Utf8, "device_id": pl.Utf8, "title": pl.Utf8, "detail": pl.Utf8,
                         "kwh_per_month": pl.Float64, "money_per_month": pl.Float64,
                         "currency": pl.Utf8, "status": pl.Utf8, "status_changed_by": pl.Utf8,
                         "status_changed_at": TS, "created_at": TS, "updated_at": TS}
# A recommendation is re-evaluated every day from the last weeks of data; one not renewed for
# this long after the home's newest data came from data that has moved on.
RECOMMENDATION_STALE = timedelta(days=2)


def recommendations(db: Database, principal: Principal, home_id: str) -> pl.DataFrame:
    """The home's recommendations; ``updated_at`` is the end of the data they were computed from
    (event time: the day's evaluation)."""
    require_home(principal, home_id)
    return db.frame(
        "SELECT kind, device_id, title, detail, kwh_per_month, money_per_month, currency, status, "
        f"status_changed_by, {db.us('status_changed_at')} AS status_changed_at, "
        f"{db.us('created_at')} AS created_at, {db.us('updated_at')} AS updated_at "
        "FROM recommendations WHERE home_id = :h ORDER BY money_per_month DESC, kind, device_id",
        {"h": home_id}, RECOMMENDATION_SCHEMA)


def decide_recommendation(db: Database, accounts: Accounts, principal: Principal, home_id: str,
                          kind: str, device_id: str, status: str) -> bool:
    """Accept or dismiss: the household's decision, recorded with who made it."""
    require_owner(principal, home_id)
    if status not in ("accepted", "dismissed", "new"):
        raise ValueError(f"status must be accepted, dismissed or new, got {status!r}")
    with db.transaction() as tx:
        found = tx.execute(
            "UPDATE recommendations SET status = :s, status_changed_at = :now, "
            "status_changed_by = :u WHERE home_id = :h AND kind = :k AND device_id = :d",
            {"s": status, "now": accounts.clock(), "u": principal.username, "h": home_id,
             "k": kind, "d": device_id}) == 1
    if found:
        accounts.audit(principal.username, f"recommendation_{status}", home_id, device_id or None,
                       kind)
    return found


def measured_savings(db: Database, principal: Principal, home_id: str) -> dict[tuple[str, str], object]:
    """What the home's accepted recommendations measurably saved (``shems savings``), by (kind,
    device_id): a ``MeasuredRecommendation`` each (measured, still measuring, or why not)."""
    require_home(principal, home_id)
    from pipeline.tools.savings_report import measure_db

    results, _ = measure_db(db, home_id)
    return {(m.kind, m.device_id): m for m in results}


def fleet_savings(db: Database, principal: Principal):
    """The fleet's measured savings of accepted recommendations (operators): the per-recommendation
    results and their summary (``pipeline.energy.savings.FleetSavings``), in a fixed number of
    statements however many homes accepted advice (``measure_db``)."""
    require_fleet(principal)
    from pipeline.tools.savings_report import measure_db

    return measure_db(db)


# ---------------------------------------------------------------------------- fleet
#
# Everything here is one SQL aggregate over the whole fleet or one page of homes: no query returns
# a row per home or per device of the fleet, so the page costs the same with 2 homes as with
# 10,000 (apart from the database's own scans). "A home's power" follows the pipeline's rule for
# home totals: its meters when it has any, else the sum of its devices.

FLEET_LIST_LIMIT = 100  # silent meters and homes with open anomalies listed on the page
FLEET_ORDERS = {"today_kwh": "today_kwh DESC, h.home_id", "home_id": "h.home_id"}

# Per home: does it have a meter, and the newest reading of the devices its total counts.
_HOME_SEEN = ("SELECT home_id, max(CASE WHEN kind = 'meter' THEN 1 ELSE 0 END) AS has_meter, "
              "CASE WHEN max(CASE WHEN kind = 'meter' THEN 1 ELSE 0 END) = 1 "
              "THEN max(CASE WHEN kind = 'meter' THEN last_seen END) ELSE max(last_seen) END "
              "AS last_seen FROM devices {where} GROUP BY home_id")
# The power of the devices a home's total counts (its meters, or all its devices when it has
# none) at their newest readings, per home. devices.last_seen is the newest reading's time stamp,
# so each is one key probe, driven from the devices (a join let PostgreSQL walk every reading).
def _counted_power(homes: str = "") -> str:
    meters = "SELECT home_id, max(CASE WHEN kind = 'meter' THEN 1 ELSE 0 END) AS has_meter FROM devices"
    only = ""
    if homes:
        meters += f" WHERE home_id IN ({homes})"
        only = f"AND d.home_id IN ({homes}) "
    return ("SELECT d.home_id, sum((SELECT r.power_w FROM readings r WHERE r.home_id = d.home_id "
            "AND r.device_id = d.device_id AND r.ts = d.last_seen)) AS power_w FROM devices d "
            f"JOIN ({meters} GROUP BY home_id) h ON h.home_id = d.home_id "
            f"WHERE d.last_seen >= :f {only}AND (d.kind = 'meter' OR h.has_meter = 0) "
            "GROUP BY d.home_id")


@dataclass(frozen=True, slots=True)
class Fleet:
    as_of: datetime
    homes_total: int
    homes_fresh: int  # homes whose counted devices reported within stale_after_s
    homes_with_open_anomalies: int
    demand_w: float  # homes with fresh data
    demand: pl.DataFrame  # bucket, power_w: the fleet's last 24 h in 15-minute slots
    forecast: pl.DataFrame  # target_ts, yhat_w, lower_w, upper_w: sum of homes' newest forecasts
    forecast_homes: int
    silent_meters_total: int
    silent_meters: pl.DataFrame  # home_id, device_id, last_seen: the first FLEET_LIST_LIMIT
    anomalies: pl.DataFrame  # home_id, open, since: the FLEET_LIST_LIMIT homes with most open
    ingest_per_s: float  # readings per second over the last 5 minutes (event time)
    newest_reading: datetime | None
    newest_minute: datetime | None
    dead_letters_hour: int
    dead_letter_reasons: pl.DataFrame  # reason, count (last hour)


def fleet(db: Database, principal: Principal, now: datetime, stale_after_s: float,
          silent_after_s: float) -> Fleet:
    """The fleet's totals and lists for the operator's page; the table of homes is
    ``fleet_homes`` (one page of it at a time)."""
    require_fleet(principal)
    fresh_since = now - timedelta(seconds=stale_after_s)
    (total, fresh), = db.rows(
        "SELECT count(*), coalesce(sum(CASE WHEN last_seen >= :f THEN 1 ELSE 0 END), 0) "
        f"FROM ({_HOME_SEEN.format(where='')}) h", {"f": fresh_since})
    (demand_w,), = db.rows(f"SELECT coalesce(sum(power_w), 0) FROM ({_counted_power()}) p",
                           {"f": fresh_since})
    (with_anomalies,), = db.rows(
        "SELECT count(DISTINCT home_id) FROM anomalies WHERE ended_at IS NULL "
        "AND home_id IN (SELECT home_id FROM devices)")
    open_anomalies = db.frame(
        f"SELECT home_id, count(*) AS open, {db.us('min(started_at)')} AS since FROM anomalies "
        "WHERE ended_at IS NULL GROUP BY home_id ORDER BY 2 DESC, 1 LIMIT :n",
        {"n": FLEET_LIST_LIMIT}, {"home_id": pl.Utf8, "open": pl.Int64, "since": TS})
    silent_where = ("FROM devices WHERE kind = 'meter' AND (last_seen IS NULL OR last_seen < :s)")
    silent_params = {"s": now - timedelta(seconds=silent_after_s)}
    (silent_total,), = db.rows(f"SELECT count(*) {silent_where}", silent_params)
    silent = db.frame(f"SELECT home_id, device_id, {db.us('last_seen')} AS last_seen {silent_where} "
                      "ORDER BY last_seen IS NOT NULL, last_seen, home_id, device_id LIMIT :n",
                      {**silent_params, "n": FLEET_LIST_LIMIT},
                      {"home_id": pl.Utf8, "device_id": pl.Utf8, "last_seen": TS})
    # The fleet's minutes (the store keeps their sums over every home in fleet_1m), summed into
    # 15-minute slots: 1,440 rows for a day whatever the fleet's size.
    b = _bucket_us(db, "bucket", 900)
    demand = db.frame(f"SELECT {b} AS bucket, sum(power_w) / 15.0 AS power_w FROM fleet_1m "
                      f"WHERE bucket >= :s GROUP BY {b} ORDER BY 1",
                      {"s": now - timedelta(hours=24)}, {"bucket": TS, "power_w": pl.Float64})
    # Each home's newest hourly forecast if made in the last 6 h, summed: the store keeps the
    # sums of the homes' newest forecasts by when they were made (fleet_forecast), so this reads
    # a few rows per hour forecast, not every home's.
    forecast = db.frame(
        f"SELECT {db.us('target_ts')} AS target_ts, sum(yhat_w) AS yhat_w, sum(lower_w) AS lower_w, "
        "sum(upper_w) AS upper_w, sum(homes) AS homes FROM fleet_forecast WHERE resolution_min = 60 "
        "AND made_at >= :since AND target_ts >= :now AND homes > 0 GROUP BY target_ts ORDER BY 1",
        {"since": now - timedelta(hours=6), "now": now - timedelta(hours=1)},
        {"target_ts": TS, "yhat_w": pl.Float64, "lower_w": pl.Float64, "upper_w": pl.Float64,
         "homes": pl.Int64})
    (recent,) = db.rows("SELECT count(*) FROM readings WHERE ts >= :s",
                        {"s": now - timedelta(minutes=5)})[0]
    (newest,) = db.rows(f"SELECT {db.us('max(ts)')} FROM readings")[0]
    (newest_minute,) = db.rows(f"SELECT {db.us('max(bucket)')} FROM home_1m")[0]
    reasons = db.frame("SELECT reason, count(*) AS n FROM dead_letter WHERE received_at >= :s "
                       "GROUP BY reason ORDER BY 2 DESC LIMIT 10", {"s": now - timedelta(hours=1)},
                       {"reason": pl.Utf8, "n": pl.Int64})
    (dead_hour,) = db.rows("SELECT count(*) FROM dead_letter WHERE received_at >= :s",
                           {"s": now - timedelta(hours=1)})[0]
    return Fleet(
        now, int(total), int(fresh), int(with_anomalies), float(demand_w), demand,
        forecast.drop("homes"), int(cast(int | None, forecast["homes"].max()) or 0) if forecast.height else 0,
        int(silent_total), silent, open_anomalies, recent / 300.0, from_us(newest), from_us(newest_minute),
        int(dead_hour), reasons)


@dataclass(frozen=True, slots=True)
class FleetHomes:
    rows: pl.DataFrame  # home_id, power_w, last_seen, fresh, today_kwh, open_anomalies
    total: int  # homes matching the search
    page: int  # 0-based, clamped to the last page
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


FLEET_HOMES_SCHEMA: Schema = {"home_id": pl.Utf8, "last_seen": TS, "today_kwh": pl.Float64,
                              "open_anomalies": pl.Int64}


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, case-insensitively (compare with lower()),
    with LIKE's own wildcards in it taken literally (``ESCAPE '!'``)."""
    escaped = text.strip().lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def _matching_homes(search: str) -> tuple[str, dict[str, str]]:
    """A condition on ``home_id`` for the homes whose id, or one of whose devices' ids, contains
    ``search`` ("" for every home)."""
    if not search.strip():
        return "", {}
    return ("home_id IN (SELECT home_id FROM devices WHERE lower(home_id) LIKE :q ESCAPE '!' "
            "OR lower(device_id) LIKE :q ESCAPE '!')", {"q": _like_pattern(search)})


def fleet_homes(db: Database, principal: Principal, now: datetime, stale_after_s: float,
                search: str = "", page: int = 0, page_size: int = 50,
                order: str = "today_kwh") -> FleetHomes:
    """One page of the fleet's homes: each home's power now, newest reading, energy today (UTC)
    and open anomalies, biggest consumers first (or by home id), optionally only the homes whose
    id or one of whose devices' ids contains ``search``. Energy today is the daily rollup's
    (``home_1d``, the store keeps it on every write): one row per home, not 24 or 1,440."""
    require_fleet(principal)
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    if order not in FLEET_ORDERS:
        raise ValueError(f"order must be one of {sorted(FLEET_ORDERS)}, got {order!r}")
    matching, params = _matching_homes(search)
    # All of a matching home's devices, so its total keeps the meter rule.
    where = f"WHERE {matching}" if matching else ""
    (total,), = db.rows(f"SELECT count(DISTINCT home_id) FROM devices {where}", params)
    page = max(0, min(page, max(0, -(-total // page_size) - 1)))
    midnight = local_midnight(now, "UTC")
    # One probe of the day index per home listed: no search condition here (SQLite ran the
    # search's subquery again for every home, 36 s for 10,000).
    daily = "home_1d INDEXED BY home_1d_day" if db.dialect == "sqlite" else "home_1d"
    rows = db.frame(
        f"SELECT h.home_id, {db.us('h.last_seen')} AS last_seen, "
        "coalesce(t.wh, 0) / 1000.0 AS today_kwh, coalesce(o.n, 0) AS open_anomalies "
        f"FROM ({_HOME_SEEN.format(where=where)}) h "
        f"LEFT JOIN (SELECT home_id, energy_wh AS wh FROM {daily} WHERE day = :m) t "
        "ON t.home_id = h.home_id "
        "LEFT JOIN (SELECT home_id, count(*) AS n FROM anomalies WHERE ended_at IS NULL "
        "GROUP BY home_id) o ON o.home_id = h.home_id "
        f"ORDER BY {FLEET_ORDERS[order]} LIMIT :n OFFSET :o",
        {**params, "m": midnight, "n": page_size, "o": page * page_size}, FLEET_HOMES_SCHEMA)
    fresh_since = now - timedelta(seconds=stale_after_s)
    power = pl.DataFrame(schema={"home_id": pl.Utf8, "power_w": pl.Float64})
    if rows.height:
        names = {f"h{i}": h for i, h in enumerate(rows["home_id"])}
        power = db.frame(_counted_power(", ".join(":" + n for n in names)),
                         {**names, "f": fresh_since}, {"home_id": pl.Utf8, "power_w": pl.Float64})
    rows = (rows.join(power, on="home_id", how="left")
            .with_columns(pl.col("power_w").fill_null(0.0),
                          (pl.col("last_seen") >= fresh_since).fill_null(False).alias("fresh"))
            .select("home_id", "power_w", "last_seen", "fresh", "today_kwh", "open_anomalies"))
    return FleetHomes(rows, int(total), page, page_size)


def home_choices(db: Database, principal: Principal, search: str = "", limit: int = 100,
                 include: str | None = None) -> list[str]:
    """The homes a user may pick, at most ``limit`` of them (an operator's fleet may hold
    thousands): their own, or (operators) the store's homes whose id contains ``search``, in id
    order; ``include`` (the home on show) comes first when it is one of them but not listed."""
    if not principal.sees_fleet:
        q = search.strip().lower()
        homes = [h for h in sorted(principal.homes) if q in h.lower()][:limit]
        return [include, *homes] if include in principal.homes and include not in homes else homes
    where, params = ("", {})
    if search.strip():
        where, params = "WHERE lower(home_id) LIKE :q ESCAPE '!'", {"q": _like_pattern(search)}
    homes = [h for (h,) in db.rows(f"SELECT DISTINCT home_id FROM devices {where} "
                                   "ORDER BY home_id LIMIT :n", {**params, "n": limit})]
    if include is not None and include not in homes and db.rows(
            "SELECT 1 FROM devices WHERE home_id = :h LIMIT 1", {"h": include}):
        homes = [include, *homes]
    return homes




# ---------------------------------------------------------------------------- audit

AUDIT_SCHEMA: Schema = {"at": TS, "username": pl.Utf8, "action": pl.Utf8, "home_id": pl.Utf8,
                "device_id": pl.Utf8, "detail": pl.Utf8}


def audit_log(db: Database, principal: Principal, limit: int = 200) -> pl.DataFrame:
    require_admin(principal)
    return db.frame(f"SELECT {db.us('at')} AS at, username, action, home_id, device_id, detail "
                    "FROM audit_log ORDER BY at DESC, id DESC LIMIT :n", {"n": limit}, AUDIT_SCHEMA)


def day_range(first: date, last: date, tz: str) -> tuple[datetime, datetime]:
    """[first 00:00, last+1 00:00) in the home's time zone, as UTC."""
    zone = ZoneInfo(tz)
    return (datetime.combine(first, time(0), zone).astimezone(timezone.utc),
            datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(timezone.utc))
