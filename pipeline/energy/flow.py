"""Where a home's energy came from and went: grid, solar, battery, home and EV, as the links of a
Sankey diagram, with self-consumption and self-sufficiency.

Pure: a frame of device energy per bucket in, an :class:`EnergyFlow` out.

Readings are signed (``pipeline.records.Reading``): positive draws power, negative supplies it. So
per bucket (1-minute buckets from the store are exact; hourly ones net what happened within the
hour):

* **grid**: the meters' sum (a home without a meter: the sum of all its devices, the pipeline's
  rule for home totals); positive is **import**, negative **export**;
* **solar**: minus the PV devices' sum, when positive;
* **battery**: positive is **charge**, negative **discharge** (the batteries' sum);
* **EV**: its positive draw (an EV feeding the home back is not modelled: counted as 0);
* **home**: the rest, import + solar + discharge - export - charge - EV, which is what every
  other device and the unmetered loads used.

So sources (import + solar + discharge) equal sinks (home + EV + charge + export) in every bucket.
Energy is counted in integer milliwatt-hours, so that balance holds exactly, not to a rounding
tolerance. A bucket whose readings do not add up (home below zero: the meter exported more than
solar and battery gave, e.g. a PV reading missing from that minute) or that has devices but no
meter reading (a home with a meter) is left out whole and counted in ``left_out_buckets``.

Links: each bucket's sources are shared out greedily, solar first (to home, EV, battery, grid),
then battery discharge (home, EV, grid), then grid import (home, EV, battery). Within one bucket
the grid either imports or exports and the battery either charges or discharges (each is one net
value), so this always places every source, and solar counts as self-consumed before any battery
energy does, as home energy dashboards show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from pipeline.records import DeviceKind

GRID, SOLAR, BATTERY, HOME, EV = "grid", "solar", "battery", "home", "ev"
SOURCES = (SOLAR, BATTERY, GRID)
SINKS = (HOME, EV, BATTERY, GRID)
# What each source may feed, in the order it is shared out.
_ALLOWED = {SOLAR: (HOME, EV, BATTERY, GRID), BATTERY: (HOME, EV, GRID), GRID: (HOME, EV, BATTERY)}
FLOW_KINDS = frozenset({DeviceKind.PV, DeviceKind.BATTERY, DeviceKind.EV})


@dataclass(frozen=True, slots=True)
class FlowLink:
    source: str  # solar | battery | grid
    sink: str  # home | ev | battery | grid
    mwh: int  # milliwatt-hours

    @property
    def kwh(self) -> float:
        return self.mwh / 1_000_000


@dataclass(frozen=True, slots=True)
class EnergyFlow:
    start: datetime | None
    end: datetime | None
    buckets: int  # buckets counted
    left_out_buckets: int  # buckets whose readings did not add up, or without a meter reading
    links: tuple[FlowLink, ...]  # every allowed link, zero ones included
    sources: dict[str, int]  # mWh per source: solar, battery (discharge), grid (import)
    sinks: dict[str, int]  # mWh per sink: home, ev, battery (charge), grid (export)

    def link(self, source: str, sink: str) -> int:
        return next((x.mwh for x in self.links if x.source == source and x.sink == sink), 0)

    @property
    def self_consumption(self) -> float | None:
        """Share of the solar generation used on site (home, EV or battery), not exported."""
        solar = self.sources[SOLAR]
        return None if solar <= 0 else 1 - self.link(SOLAR, GRID) / solar

    @property
    def self_sufficiency(self) -> float | None:
        """Share of the home's and EV's consumption not taken from the grid."""
        used = self.sinks[HOME] + self.sinks[EV]
        if used <= 0:
            return None
        return 1 - (self.link(GRID, HOME) + self.link(GRID, EV)) / used


def energy_flow(usage: pl.DataFrame, has_meter: bool | None = None) -> EnergyFlow:
    """The flow of ``usage``: ``bucket``, ``kind`` (a ``DeviceKind`` value), ``energy_wh`` (one row
    per device and bucket; several devices of a kind add up). ``has_meter``: whether the home has a
    meter (default: whether ``usage`` holds one)."""
    missing = {"bucket", "kind", "energy_wh"} - set(usage.columns)
    if missing:
        raise ValueError(f"energy_flow needs the columns bucket, kind, energy_wh; missing {sorted(missing)}")
    kinds = usage["kind"].cast(pl.Utf8)
    if has_meter is None:
        has_meter = bool((kinds == DeviceKind.METER.value).any())
    mwh = (pl.col("energy_wh").cast(pl.Float64).fill_nan(None).fill_null(0.0) * 1000).round(0).cast(pl.Int64)
    per = (usage.with_columns(kinds.alias("kind"))
           .group_by("bucket")
           .agg(*[mwh.filter(pl.col("kind") == k.value).sum().alias(k.value) for k in DeviceKind],
                (pl.col("kind") == DeviceKind.METER.value).any().alias("metered"))
           .sort("bucket"))
    meter, pv, battery, ev = (per[k.value].to_numpy().astype(np.int64) for k in
                              (DeviceKind.METER, DeviceKind.PV, DeviceKind.BATTERY, DeviceKind.EV))
    appliance = per[DeviceKind.APPLIANCE.value].to_numpy().astype(np.int64)
    grid = meter if has_meter else meter + pv + battery + ev + appliance
    src = {GRID: np.maximum(grid, 0), SOLAR: np.maximum(-pv, 0), BATTERY: np.maximum(-battery, 0)}
    snk = {GRID: np.maximum(-grid, 0), BATTERY: np.maximum(battery, 0), EV: np.maximum(ev, 0)}
    snk[HOME] = src[GRID] + src[SOLAR] + src[BATTERY] - snk[GRID] - snk[BATTERY] - snk[EV]
    keep = snk[HOME] >= 0
    if has_meter:
        keep &= per["metered"].to_numpy()
    src = {k: v[keep] for k, v in src.items()}
    snk = {k: v[keep] for k, v in snk.items()}
    remaining = {k: v.copy() for k, v in snk.items()}
    links = []
    for source in SOURCES:
        left = src[source].copy()
        for sink in _ALLOWED[source]:
            take = np.minimum(left, remaining[sink])
            left -= take
            remaining[sink] -= take
            links.append(FlowLink(source, sink, int(take.sum())))
        # each bucket either imports or exports, charges or discharges: nothing is left unplaced
        assert not left.any(), f"{source} energy left unplaced"
    buckets = per["bucket"]
    return EnergyFlow(
        start=buckets.min() if len(buckets) else None,  # type: ignore[arg-type]
        end=buckets.max() if len(buckets) else None,  # type: ignore[arg-type]
        buckets=int(keep.sum()), left_out_buckets=int((~keep).sum()), links=tuple(links),
        sources={k: int(v.sum()) for k, v in src.items()}, sinks={k: int(v.sum()) for k, v in snk.items()})


def has_flow_devices(kinds: list[str]) -> bool:
    """Whether a home has anything besides the grid to show a flow of (PV, battery or EV)."""
    return any(k in {d.value for d in FLOW_KINDS} for k in kinds)
