"""Synthetic homes that behave like real ones, for the demo, load tests and control loops.

Each home is deterministic for its seed and the time of day, with these loads:

* always-on base load (router, standby, alarms): 60–200 W with a little noise;
* a fridge compressor cycling about 35 % of the time at 80–120 W;
* a kettle in the morning (2.8 kW for ~3 min) and cooking in the evening (~2 kW for 20–40 min);
* a washing machine on some days (2 kW heating for 20 min, then ~250 W for 70 min);
* a dishwasher most evenings (1.8 kW, 100 W, 1.8 kW phases);
* an EV charging at 7.2 kW some evenings, in some homes;
* PV in some homes: negative power in daylight, a bell over the day with passing clouds;
* a home battery in some PV homes: it charges from the solar surplus in the late morning
  (positive power) and discharges into the evening load (negative), up to its power rating; no state of charge is
  kept (each instant stays a pure function of the time), so it is a picture, not a battery model
  (a home given a ``battery`` model below has that instead).

The ``mains`` meter sees the sum of everything (net of PV, so it goes negative at sunny noon).
Every device carries a cumulative energy counter: the meter's is the import register (it only
counts power drawn from the grid), PV's counts generation.

The switchable devices obey commands on ``shems/<home>/<device>/set`` and acknowledge them on
``.../ack`` (see ``pipeline.energy.device_control``): a device switched off draws nothing, and the meter
sees the difference. A home given a ``battery`` (a ``BatteryModel``) has a ``battery`` device that
draws its setpoint (+ charging, - discharging) while its state of charge allows; a home whose EV is
``ev_plugged`` has a car waiting to charge: it draws its charger's 7.2 kW, or less under a limit.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pipeline.energy.device_control import BatteryModel, SetCommand, SwitchBoard, ack_payload, ack_topic
from pipeline.ingest.decode.common import DecodeError
from pipeline.logs import get_logger
from pipeline.records import CommandAck, DeviceKind, Reading, Source

log = get_logger(__name__)

# What a relay lets through: (device, power it would draw) -> power it draws.
Relay = Callable[[str, float], float]


def _day_rng(seed: int, day: int, device: str) -> random.Random:
    return random.Random(f"{seed}:{day}:{device}")


def _in(minute: float, start: float, length: float) -> bool:
    return start <= minute < start + length


@dataclass
class SimulatedHome:
    home_id: str
    seed: int
    counters: dict[str, float] = field(default_factory=dict)
    last: dict[str, tuple[float, float]] = field(default_factory=dict)  # device -> (ts, power)
    battery: BatteryModel | None = None
    ev_plugged: bool = False

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.base_w = rng.uniform(60, 200)
        self.fridge_w = rng.uniform(80, 120)
        self.fridge_phase = rng.uniform(0, 45)
        self.has_ev = rng.random() < 0.3
        self.pv_kw = rng.uniform(3, 6) if rng.random() < 0.4 else 0.0
        self.tz_offset_h = 0.0  # simulated homes live on UTC clocks
        self.has_ev = self.has_ev or self.ev_plugged
        # its own stream, so adding batteries left every other draw (and home) as it was
        battery = random.Random(f"{self.seed}:battery")
        self.battery_kw = battery.choice((2.5, 3.0, 5.0)) if self.pv_kw and battery.random() < 0.6 else 0.0

    @property
    def has_battery(self) -> bool:
        return self.battery_kw > 0 or self.battery is not None

    def devices(self) -> list[tuple[str, DeviceKind]]:
        out = [("mains", DeviceKind.METER), ("fridge", DeviceKind.APPLIANCE), ("kettle", DeviceKind.APPLIANCE),
               ("washer", DeviceKind.APPLIANCE), ("dishwasher", DeviceKind.APPLIANCE)]
        if self.has_ev:
            out.append(("ev", DeviceKind.EV))
        if self.pv_kw:
            out.append(("pv", DeviceKind.PV))
        if self.has_battery:
            out.append(("battery", DeviceKind.BATTERY))
        return out

    def power_at(self, t: datetime, relay: Relay | None = None) -> dict[str, float]:
        """Each device's power at time t (W); deterministic for (seed, t) and the relay states."""
        epoch_min = t.timestamp() / 60
        day = int(epoch_min // 1440)
        minute = epoch_min - day * 1440  # minute of the (UTC) day
        noise = random.Random(f"{self.seed}:{int(t.timestamp())}")
        p: dict[str, float] = {}
        p["fridge"] = self.fridge_w if ((epoch_min + self.fridge_phase) % 45) < 16 else 1.5
        r = _day_rng(self.seed, day, "kettle")
        morning, evening = 420 + r.uniform(0, 60), 1080 + r.uniform(0, 90)
        cooking_len = r.uniform(20, 40)
        p["kettle"] = 2800.0 if _in(minute, morning, 3) else (2000.0 if _in(minute, evening, cooking_len) else 0.0)
        r = _day_rng(self.seed, day, "washer")
        washer = 0.0
        if r.random() < 0.4:
            start = 600 + r.uniform(0, 480)
            washer = 2000.0 if _in(minute, start, 20) else (250.0 if _in(minute, start + 20, 70) else 0.0)
        p["washer"] = washer
        r = _day_rng(self.seed, day, "dishwasher")
        dish = 0.0
        if r.random() < 0.6:
            start = 1200 + r.uniform(0, 120)
            if _in(minute, start, 30) or _in(minute, start + 90, 20):
                dish = 1800.0
            elif _in(minute, start + 30, 60):
                dish = 100.0
        p["dishwasher"] = dish
        if self.has_ev:
            r = _day_rng(self.seed, day, "ev")
            ev = 0.0
            if r.random() < 0.35:
                start, length = 1080 + r.uniform(0, 240), r.uniform(60, 180)
                ev = 7200.0 if _in(minute, start, length) or _in(minute + 1440, start, length) else 0.0
            p["ev"] = 7200.0 if self.ev_plugged else ev
        if self.pv_kw:
            hour = minute / 60
            bell = max(0.0, math.sin(math.pi * (hour - 6) / 14)) if 6 <= hour <= 20 else 0.0
            cloud = 0.55 + 0.45 * math.sin(epoch_min / 17 + self.seed) * math.sin(epoch_min / 41)
            p["pv"] = -round(self.pv_kw * 1000 * bell * max(0.2, cloud), 1)
        if self.battery is not None:
            p["battery"] = 0.0  # idle unless commanded: the relay (SwitchBoard) gives its setpoint
        if relay is not None:
            p = {device: relay(device, power) for device, power in p.items()}
        base = self.base_w * (1 + 0.05 * noise.uniform(-1, 1))
        if self.battery_kw and self.battery is None:  # a modelled battery obeys setpoints instead
            net = base + sum(p.values())
            rating = self.battery_kw * 1000
            battery = 0.0
            # charging is held to two late-morning hours, so a day's charge stays near what a
            # home battery holds (2 h x its rating) and about what the evening takes back
            if 10 * 60 <= minute < 12 * 60 and net < 0:
                battery = min(-net, rating)  # charge from the surplus
            elif minute >= 17 * 60 and net > 0:
                battery = -min(net, rating)  # discharge into the evening load
            battery = round(battery, 1)
            p["battery"] = relay("battery", battery) if relay is not None else battery
        p["mains"] = round(base + sum(v for k, v in p.items()), 1)
        return p

    def readings_at(self, t: datetime, relay: Relay | None = None) -> list[Reading]:
        """Readings for every device at t, advancing each device's energy counter."""
        powers = self.power_at(t, relay)
        ts = t.timestamp()
        kinds = dict(self.devices())
        out = []
        for device, power in powers.items():
            prev = self.last.get(device)
            counter = self.counters.get(device, 0.0)
            if prev is not None:
                held = prev[1]
                if device == "pv":
                    held = -held  # generation register
                elif device == "mains":
                    held = max(held, 0.0)  # import register
                counter += max(held, 0.0) * (ts - prev[0]) / 3600
            self.counters[device] = counter
            self.last[device] = (ts, power)
            out.append(Reading(self.home_id, device, t, power, round(counter, 3),
                               kind=kinds[device], source=Source.NATIVE))
        return out


def make_homes(count: int, seed: int = 1, prefix: str = "sim-home") -> list[SimulatedHome]:
    return [SimulatedHome(f"{prefix}-{i:04d}", seed * 100_003 + i) for i in range(count)]


class CommandListener:
    """Makes a simulated fleet obey ``set`` commands: a thin MQTT adapter around a SwitchBoard.

    It subscribes on the publisher's own client; a command is handled (and acknowledged) in
    paho's callback thread as soon as it arrives, schedules when the simulation ticks.
    """

    def __init__(self, publisher, fleet: list[SimulatedHome], topic_prefix: str = "",
                 stuck: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.publisher = publisher
        self.topic_prefix = topic_prefix
        self.board = SwitchBoard({(home.home_id, device): kind for home in fleet
                                  for device, kind in home.devices()}, stuck=stuck,
                                 batteries={(home.home_id, "battery"): home.battery for home in fleet
                                            if home.battery is not None})
        self._homes = {home.home_id for home in fleet}
        self._lock = threading.Lock()  # paho's thread commands, the simulation thread reads
        publisher.subscribe(f"{topic_prefix}shems/+/+/set", self._on_message)

    def _on_message(self, msg) -> None:
        parts = msg.topic[len(self.topic_prefix):].split("/")
        if len(parts) != 4 or parts[1] not in self._homes:
            return  # another fleet's device
        home_id, device_id = parts[1], parts[2]
        now = datetime.now(timezone.utc)
        try:
            cmd = SetCommand.parse(msg.payload, now)
        except DecodeError as exc:
            log.warning("simulator_bad_command", topic=msg.topic, error=str(exc))
            return
        with self._lock:
            ack = self.board.command(home_id, device_id, cmd, now)
        self._send(ack)

    def relay(self, home_id: str) -> Relay:
        return lambda device, power: self.board.power(home_id, device, power)

    def tick(self, now: datetime) -> None:
        with self._lock:
            acks = self.board.due(now)
        for ack in acks:
            self._send(ack)

    def _send(self, ack: CommandAck) -> None:
        self.publisher.publish_nowait(ack_topic(ack.home_id, ack.device_id, self.topic_prefix),
                                      ack_payload(ack))


def run_simulation(publisher, homes: int, interval_s: float, duration_s: float | None,
                   topic_prefix: str = "", seed: int = 1, stop_event: threading.Event | None = None,
                   on_tick=None, control: bool = True,
                   stuck: frozenset[tuple[str, str]] = frozenset(),
                   fleet: list[SimulatedHome] | None = None) -> int:
    """Publish every device of every home each interval (ts = now) until the duration or stop.

    With ``control`` the devices obey commands (``stuck`` ones acknowledge but keep drawing).
    ``fleet`` replaces the ``homes`` made from ``seed`` (homes with batteries, plugged-in EVs).
    """
    stop_event = stop_event or threading.Event()
    fleet = fleet if fleet is not None else make_homes(homes, seed)
    listener = CommandListener(publisher, fleet, topic_prefix, stuck) if control else None
    started = time.monotonic()
    sent = 0
    next_tick = started
    while not stop_event.is_set():
        if duration_s is not None and time.monotonic() - started >= duration_s:
            break
        now = datetime.now(timezone.utc)
        if listener is not None:
            listener.tick(now)
        for home in fleet:
            relay = listener.relay(home.home_id) if listener is not None else None
            for reading in home.readings_at(now, relay):
                publisher.publish_reading(reading, topic_prefix)
                sent += 1
        if on_tick:
            on_tick(sent)
        next_tick += interval_s
        stop_event.wait(max(0.0, next_tick - time.monotonic()))
    return sent


def simulated_day(home: SimulatedHome, day_start: datetime, step_s: int = 60) -> list[Reading]:
    """A whole day of readings at a fixed step, for tests and evaluations."""
    out = []
    for i in range(int(86400 / step_s)):
        out.extend(home.readings_at(day_start + timedelta(seconds=i * step_s)))
    return out
