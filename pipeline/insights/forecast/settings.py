"""What a home's forecaster does, tunable in one place, with the defaults we ship."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import reduce_settings


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """Tunables of ``HomeForecaster``. The defaults are what ``shems evaluate`` scores."""

    def __reduce__(self):
        return reduce_settings(self)

    # The home's time zone (IANA name). Calendar features and the daily profile use its local
    # clock, so "the same slot yesterday" is the same wall-clock time across DST changes.
    timezone: str = "UTC"
    # Slot lengths in minutes that are forecast; each must divide 60. Slots are aligned to UTC
    # multiples of their length, which are local boundaries in any zone with whole-hour offsets.
    resolutions: tuple[int, ...] = (60, 15)
    # Forecasts are issued at every hour boundary for the slots of the next ``horizon_hours``.
    horizon_hours: int = 24
    # Each home does its hourly work (learning from the hour that closed, issuing the next 24 h)
    # this many minutes after the boundary at most, at a minute fixed by its id. Done at the
    # boundary itself, every home of a worker would do it in the same event minute and hold up
    # every reading behind it (2,000 homes: about 4 s). The forecasts still use only what was
    # known at the boundary and carry it as ``made_at``; they are published up to this much later.
    issue_spread_min: int = 15
    # A slot is MISSING (neither learned from nor scored) unless this share of its minutes is
    # covered by data. Missing is never zero.
    min_coverage: float = 0.8
    # A home minute's value stands for the minutes up to the next one the home sends, but at most
    # for the home's usual sampling step (30 min for half-hourly meters, 1 min for a 1-minute
    # stream) and never more than this: a longer silence is a gap, not a flat load.
    max_hold_min: int = 30
    # Days of slot history kept for hourly slots (the profile looks back this far), and for
    # shorter slots, which cost 4 bytes a slot too: a quarter-hour day is 384 bytes.
    history_days: int = 56
    sub_hourly_history_days: int = 28
    # The profile forecast is a weighted median of the same local slot on past days; a day's
    # weight halves every ``profile_half_life_days`` (recent habits count more, old ones fade).
    profile_half_life_days: float = 7.0
    # Central share of actuals the prediction interval should contain.
    interval_coverage: float = 0.8
    # Conformal calibration keeps this many recent targets' normalised residuals per horizon
    # band (20 days of hourly slots, 5 days of quarter hours), as int16: 960 bytes a band.
    conformal_window: int = 480
    # Adaptive conformal step: the interval's miscoverage target moves by this much per matured
    # target towards the observed miscoverage (Gibbs & Candes 2021), so coverage holds under drift.
    conformal_step: float = 0.005
    # Model selection compares the candidates' recent absolute errors per horizon band with an
    # exponentially weighted mean of this half-life, in scored forecasts.
    selection_half_life: float = 500.0
    # The online quantile regression's AdaGrad learning rate, and the plain SGD rate of its
    # intercept (small: with the pinball loss every step has the same size, so a large rate
    # makes the intercept wander with the last hours' residuals). Targets are in units of the
    # home's level.
    learning_rate: float = 0.03
    intercept_learning_rate: float = 1e-4
    # ForecastScore records are emitted at each issue for these horizons (minutes), per
    # resolution, when the resolution divides them: 15 min, 1, 6, 12 and 24 h.
    score_horizons_min: tuple[int, ...] = (15, 60, 360, 720, 1440)
    # Public holidays count as days off (like weekends) in the day-type profile and the online
    # model's day-off feature: "CC" or "CC-REGION" (ISO 3166, e.g. "AU-QLD", "GB-ENG"), "" for
    # the time zone's country (see ``daytypes``), "none" for weekends only.
    # Last: snapshots from before it hold the fields by position and load without it.
    holiday_country: str = ""

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        from pipeline.insights.forecast.daytypes import check_country

        check_country(self.holiday_country)
        for res in self.resolutions:
            if res <= 0 or 60 % res:
                raise ValueError(f"resolution {res} min must divide 60")
        if not 0 < self.min_coverage <= 1:
            raise ValueError("min_coverage must be in (0, 1]")
        if not 0 < self.interval_coverage < 1:
            raise ValueError("interval_coverage must be in (0, 1)")
        if min(self.history_days, self.sub_hourly_history_days) < 8:
            raise ValueError("history must be at least 8 days (the weekly baseline looks 7 days back)")
        if not 0 <= self.issue_spread_min <= 30:
            raise ValueError("issue_spread_min must be 0-30 (a forecast published later is stale)")
        if not 1 <= self.horizon_hours <= 24:
            # The profile and the baselines read the same slot on earlier days, which is known at
            # issue time only for targets up to a day ahead.
            raise ValueError("horizon_hours must be 1-24")
