"""Tunables of the anomaly detectors, with the defaults we ship and evaluate.

Times are seconds of event time (the windows' buckets) unless named otherwise. Every detector
stays quiet during its warm-up, counted from the first window it sees, and until it has learned
enough (runs, hours, gaps) to know what normal is.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pipeline.settings import reduce_settings

HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    def __reduce__(self):
        return reduce_settings(self)

    window_s: int = 60  # the windows' length (pipeline.settings.WindowSettings.window_s)

    # Learning pauses while an anomaly of that kind is open, at most this long: a lasting change
    # (a new heat pump, a new fridge) becomes the new normal instead of an alert that never clears.
    learn_pause_max_s: float = 3 * DAY

    # HIGH_CONSUMPTION (home totals): the last hour's consumption against the usual high (this
    # quantile of the same local hour of day over the last `high_history_days` days, the higher of
    # the neighbouring hours); it alerts once the last hour has stayed over max(factor x usual,
    # usual + margin) for `high_persist_s`, dips to `high_hold_share` of it allowed (a dinner
    # cooked on every ring peaks for an hour, a heater left on stays), and clears when it is back
    # under the usual high.
    high_quantile: float = 0.95
    high_persist_s: float = 3600.0
    high_hold_share: float = 0.8
    high_history_days: int = 28
    high_warmup_hours: int = 7  # learned hours in the hour-of-day slot before it may alert
    high_factor: float = 2.0
    high_margin_w: float = 1000.0
    high_min_coverage: float = 0.75  # share of an hour with data for it to be learned

    # On/off (LONG_RUNNING, DUTY_CYCLE_DRIFT): a window is "on" above max(on_min_w, 2 x standby),
    # standby being the device's 5th percentile of minute power; off stretches up to
    # `run_bridge_s` inside an on-period (a washing machine's pauses) do not end it.
    on_min_w: float = 10.0
    run_bridge_s: float = 300.0

    # LONG_RUNNING: on for longer than max(long_min_s, long_factor x the usual long run), the
    # usual long run being the `long_quantile` of the device's last `long_history_runs` on-periods.
    long_quantile: float = 0.9  # exact over the last runs: robust while only a dozen are known
    long_history_runs: int = 100
    long_factor: float = 3.0
    long_min_s: float = 1800.0
    long_warmup_s: float = 3 * DAY
    long_warmup_runs: int = 10

    # DUTY_CYCLE_DRIFT (cycling appliances: a fridge, a freezer): the share of time on over the
    # last `duty_horizon_h` complete hours against its median over `duty_history_h` hours; it
    # alerts when they differ by more than max(duty_min_shift, duty_mad_factor x the median
    # absolute deviation) and clears within half that. A device counts as cycling when its usual
    # duty lies in `duty_range` and it starts at least `duty_min_cycles_per_h` cycles an hour.
    duty_horizon_h: int = 6
    duty_history_h: int = 14 * 24
    duty_min_shift: float = 0.15
    duty_mad_factor: float = 3.0
    duty_range: tuple[float, float] = (0.1, 0.9)
    duty_min_cycles_per_h: float = 0.5
    duty_min_windows_per_h: int = 45  # an hour with fewer windows is not judged
    duty_warmup_hours: int = 72

    # FLAT_LINE: the same non-zero value (at least `flat_quanta` times the device's resolution, so
    # a quantised near-zero reading of an empty home is not a stuck sensor) for longer than
    # max(flat_min_s, flat_min_readings reporting intervals, flat_factor x the longest the device
    # held one value before); holds over both minimums are suspect and never learned.
    flat_min_s: float = 3600.0
    flat_min_readings: int = 12
    flat_factor: float = 4.0
    flat_quanta: float = 25.0
    flat_warmup_s: float = 2 * DAY

    # SILENT: no window for max(silent_min_s, silent_factor x the device's usual longest
    # reporting gap, its `silent_gap_quantile` of gaps between windows).
    silent_min_s: float = 1800.0
    silent_factor: float = 4.0
    silent_gap_quantile: float = 0.99
    silent_warmup_s: float = 1 * DAY
    silent_warmup_gaps: int = 100

    # COUNTER_BACKWARDS: an anomaly stays open while resets keep coming, and clears after this
    # long without one.
    counter_quiet_s: float = 3600.0

    # Fields added later go last: a snapshot from before settings were pickled by name holds
    # the values in field order (see __setstate__).
    # A home's outage (outage.py): at least `outage_min_devices` devices, and at least
    # `outage_share` of those still heard from, going quiet within `outage_span_s` of each other
    # are one SILENT anomaly of the home instead of one per device.
    outage_min_devices: int = 3
    outage_share: float = 0.75
    outage_span_s: float = 600.0

    def __setstate__(self, state: list | dict) -> None:
        # An old snapshot's state: the values of the fields of its time, in order; fields added
        # since take their defaults.
        given = state if isinstance(state, dict) else dict(zip((f.name for f in fields(self)), state))
        for f in fields(self):
            object.__setattr__(self, f.name, given.get(f.name, f.default))

    def __post_init__(self) -> None:
        for name in ("high_quantile", "high_hold_share", "long_quantile", "silent_gap_quantile", "high_min_coverage"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
        if not 0 < self.outage_share <= 1:
            raise ValueError(f"outage_share must lie in (0, 1], got {self.outage_share}")
        low, high = self.duty_range
        if not 0 <= low < high <= 1:
            raise ValueError(f"duty_range must be (low, high) with 0 <= low < high <= 1, got {self.duty_range}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")
        for name in ("window_s", "high_history_days", "long_history_runs", "duty_horizon_h", "duty_history_h"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
