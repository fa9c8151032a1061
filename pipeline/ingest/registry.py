"""The device registry: which vendor device (topic id and channel) is which home's which device.

A TOML file, stored in the ``devices`` table on start::

    [[device]]
    source = "shelly"                        # shelly | tasmota | zigbee2mqtt | native
    vendor_id = "shellyplus1pm-a8032ab12345"  # the id in the device's topics
    channel = 0                              # optional: switch:N / em:N / Tasmota array index
    home_id = "home-1"
    device_id = "heat-pump"
    kind = "appliance"                       # meter | appliance | pv | battery | ev
    timezone = "Europe/London"               # optional (default UTC): Tasmota reports local time
    full_topic = "%topic%/%prefix%/"         # optional, Tasmota: its FullTopic (default
                                             # "%prefix%/%topic%/") ...
    prefix = "tele"                          # ... and its telemetry prefix (Prefix3, default "tele")
    base_topic = "zigbee2mqtt"               # optional, Zigbee2MQTT: its mqtt.base_topic
    power_path = "SML.Power_curr"            # optional, Tasmota without ENERGY (a smart-meter
    energy_path = "SML.Total_in"             # reader's script): power W and counter kWh
    component = "cct"                        # optional, Shelly: which component of the channel
                                             # (when e.g. rgb:0 and cct:0 share channel 0)

    specs = { capacity_kwh = 10, power_kw = 5, efficiency = 0.9 }  # optional, for plans:
                                             # battery capacity_kwh, power_kw (charge_kw,
                                             # discharge_kw), efficiency, min_soc, max_soc, soc;
                                             # EV power_kw, min_power_kw; PV kwp

    [[home]]                                 # optional: a home's local time zone, for
    home_id = "home-1"                       # profiles, tariffs and daily recommendations
    timezone = "Europe/London"
    latitude = 51.5                          # optional, with longitude: for the PV forecast
    longitude = -0.13

Native devices (``shems/<home>/<device>/reading``) need no entry: they register on first sight.
A Zigbee2MQTT ``vendor_id`` is the device's friendly name, which may contain ``/``
(``ground floor/kitchen plug``); names must differ across base topics (a device is looked up by
its name). The flow subscribes to the telemetry topics these layouts give
(see pipeline.ingest.decode.topics).
A home without a ``[[home]]`` entry takes the time zone of its registered devices, else the
flow's ``--timezone``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.records import DeviceInfo, DeviceKind, Source
from pipeline.tomlfile import array_of_tables, read_toml, wrong_types_are_errors


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    source: Source
    vendor_id: str
    channel: int | None
    home_id: str
    device_id: str
    kind: DeviceKind
    timezone: str = "UTC"
    full_topic: str | None = None  # Tasmota FullTopic; None: Tasmota's default
    prefix: str | None = None  # Tasmota telemetry prefix; None: "tele"
    base_topic: str | None = None  # Zigbee2MQTT base topic; None: "zigbee2mqtt"
    # What a plan needs to know of the device (``specs = {...}``): a battery's capacity_kwh,
    # power_kw (or charge_kw/discharge_kw), efficiency, min_soc, max_soc, soc; an EV charger's
    # power_kw, min_power_kw; a PV array's kwp.
    specs: tuple[tuple[str, float], ...] = ()
    # A Tasmota SENSOR without an ENERGY object (a smart-meter reader's Smart Meter Interface
    # script names its own values, e.g. ``SML.Power_curr``): where its power (W) and its
    # counter (kWh, as Tasmota reports energy) are, as dotted paths into the payload.
    power_path: str | None = None
    energy_path: str | None = None
    # Shelly: the component kind this entry reads (``rgb``, ``cct``, ...) where one device has
    # two metered components with the same number (a Pro RGBWW PM's rgb:0 and cct:0); None:
    # whichever metered component has the channel's number.
    component: str | None = None

    def spec(self, key: str, default: float | None = None) -> float | None:
        return dict(self.specs).get(key, default)

    def telemetry_topic(self) -> str | None:
        """Where a Tasmota device with a changed layout publishes SENSOR; None for the default
        layout (``tele/<topic>/SENSOR``, which the flow always hears) and other sources."""
        if self.source != Source.TASMOTA or (self.full_topic is None and self.prefix is None):
            return None
        full = (self.full_topic or TASMOTA_FULL_TOPIC).replace("%prefix%", self.prefix or "tele")
        return full.replace("%topic%", self.vendor_id).rstrip("/") + "/SENSOR"


# The Shelly components a reading is made of (pipeline.ingest.decode.shelly reads these).
SHELLY_METERED = ("switch", "pm1", "cover", "light", "rgb", "rgbw", "cct", "em1", "em")
TASMOTA_FULL_TOPIC = "%prefix%/%topic%/"
Z2M_BASE_TOPIC = "zigbee2mqtt"


def _topic_text(item: Mapping, key: str, where: str) -> str | None:
    """An optional topic piece: text without MQTT wildcards, not starting with a ``/``."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip("/") or "+" in value or "#" in value \
            or value.startswith("/") or not value.isprintable():
        raise ValueError(f"{where}: '{key}' must be a topic without + or # and not starting "
                         f"with /, got {value!r}")
    return value


def _sensor_path(item: Mapping, key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if (not isinstance(value, str) or not value or len(value) > 200
            or any(not part or not part.isprintable() for part in value.split("."))):
        raise ValueError(f"{where}: '{key}' must be a dotted path into the SENSOR payload, "
                         f"e.g. \"SML.Power_curr\"")
    return value


def _check_timezone(tz: object, where: str) -> str:
    if not isinstance(tz, str):
        raise ValueError(f"{where}: 'timezone' must be a string such as 'Europe/London'")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}: unknown time zone {tz!r}") from None
    return tz


_SPEC_KEYS = {
    DeviceKind.BATTERY: {"capacity_kwh", "power_kw", "charge_kw", "discharge_kw", "efficiency", "min_soc",
                         "max_soc", "soc"},
    DeviceKind.EV: {"power_kw", "min_power_kw"},
    DeviceKind.PV: {"kwp"},
}


def _specs(raw: object, kind: DeviceKind, where: str) -> tuple[tuple[str, float], ...]:
    if raw is None:
        return ()
    allowed = _SPEC_KEYS.get(kind, set())
    if not isinstance(raw, dict) or not allowed:
        raise ValueError(f"{where}: 'specs' is a table of numbers for a battery, an EV or PV "
                         f"(this device is a {kind.value})")
    out = []
    for key, value in raw.items():
        if key not in allowed:
            raise ValueError(f"{where}: unknown spec {key!r} for a {kind.value}; expected some of {sorted(allowed)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ValueError(f"{where}: spec {key!r} must be a number >= 0, got {value!r}")
        out.append((key, float(value)))
    return tuple(sorted(out))


class Registry:
    """Lookup by (source, vendor id, channel). Picklable: Bytewax operators close over it."""

    def __init__(self, entries: list[RegistryEntry], home_timezones: dict[str, str] | None = None,
                 locations: dict[str, tuple[float, float]] | None = None) -> None:
        self._entries = entries
        self._locations = dict(locations or {})
        self._index = {(e.source, e.vendor_id, e.channel, e.component): e for e in entries}
        self._home_tz = dict(home_timezones or {})
        for e in entries:
            if e.timezone != "UTC":
                self._home_tz.setdefault(e.home_id, e.timezone)
        # Asked for every message (topic routing): computed once.
        self._tasmota_topics = {t: e.vendor_id for e in entries if (t := e.telemetry_topic()) is not None}
        names: dict[str, set[str]] = {Z2M_BASE_TOPIC: set()}
        for e in entries:
            if e.source == Source.ZIGBEE2MQTT:
                names.setdefault(e.base_topic or Z2M_BASE_TOPIC, set()).add(e.vendor_id)
        # Longest base first: a base may lie under another ("zigbee2mqtt/house2").
        self._z2m_names = {base: frozenset(names[base]) for base in sorted(names, key=len, reverse=True)}

    @classmethod
    def empty(cls) -> Registry:
        return cls([])

    def home_location(self, home_id: str) -> tuple[float, float] | None:
        """The home's latitude and longitude from its [[home]] entry (for a PV forecast)."""
        return self._locations.get(home_id)

    def home_devices(self, home_id: str, kind: DeviceKind) -> list[RegistryEntry]:
        return [e for e in self._entries if e.home_id == home_id and e.kind == kind]

    def home_timezone(self, home_id: str, default: str = "UTC") -> str:
        """The home's IANA time zone: its [[home]] entry, else its devices', else ``default``."""
        return self._home_tz.get(home_id, default)

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        path = Path(path)
        data = read_toml(path, "device registry")
        with wrong_types_are_errors(str(path)):
            return cls._from_mapping(data, path)

    @classmethod
    def _from_mapping(cls, data: Mapping, path: Path) -> Registry:
        raw = array_of_tables(data.get("device"), "device", str(path))
        entries = []
        seen: dict[tuple, int] = {}
        for i, item in enumerate(raw, start=1):
            where = f"{path}: device #{i}"
            for key in ("source", "vendor_id", "home_id", "device_id"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise ValueError(f"{where}: '{key}' is required and must be a non-empty string")
            try:
                source = Source(item["source"])
            except ValueError:
                raise ValueError(f"{where}: unknown source {item['source']!r} "
                                 f"(shelly, tasmota, zigbee2mqtt or native)") from None
            try:
                kind = DeviceKind(item.get("kind", "appliance"))
            except ValueError:
                raise ValueError(f"{where}: unknown kind {item.get('kind')!r} "
                                 f"(meter, appliance, pv, battery or ev)") from None
            channel = item.get("channel")
            if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
                raise ValueError(f"{where}: 'channel' must be a whole number >= 0")
            tz = _check_timezone(item.get("timezone", "UTC"), where)
            layout = {key: _topic_text(item, key, where) for key in ("full_topic", "prefix", "base_topic")}
            if layout["full_topic"] is not None and "%prefix%" not in layout["full_topic"]:
                raise ValueError(f"{where}: 'full_topic' must hold %prefix% (Tasmota needs it)")
            wrong = [k for k, v in layout.items() if v is not None and source != (
                Source.ZIGBEE2MQTT if k == "base_topic" else Source.TASMOTA)]
            if wrong:
                raise ValueError(f"{where}: '{wrong[0]}' does not apply to a {source.value} device")
            if "/" in item["vendor_id"] and source != Source.ZIGBEE2MQTT:
                raise ValueError(f"{where}: a {source.value} vendor_id cannot contain '/'")
            specs = _specs(item.get("specs"), kind, where)
            paths = {key: _sensor_path(item, key, where) for key in ("power_path", "energy_path")}
            if source != Source.TASMOTA and any(v is not None for v in paths.values()):
                raise ValueError(f"{where}: 'power_path' and 'energy_path' apply to tasmota devices only")
            if paths["energy_path"] is not None and paths["power_path"] is None:
                raise ValueError(f"{where}: 'energy_path' needs 'power_path' (a reading has a power)")
            component = item.get("component")
            if component is not None and (source != Source.SHELLY or component not in SHELLY_METERED):
                raise ValueError(f"{where}: 'component' names a Shelly component kind "
                                 f"({', '.join(SHELLY_METERED)}), got {component!r}"
                                 + ("" if source == Source.SHELLY else f" for a {source.value} device"))
            identity = (source, item["vendor_id"], channel or 0, component)
            if identity in seen:
                # Before, the later entry silently took the earlier one's readings.
                raise ValueError(f"{where}: the same {source.value} device and channel as device #{seen[identity]} "
                                 f"({item['vendor_id']!r}, channel {channel or 0})")
            seen[identity] = i
            entries.append(RegistryEntry(source, item["vendor_id"], channel, item["home_id"],
                                         item["device_id"], kind, tz, **layout, specs=specs, **paths,
                                         component=component))
        homes = array_of_tables(data.get("home"), "home", str(path))
        home_tz = {}
        locations: dict[str, tuple[float, float]] = {}
        for i, item in enumerate(homes, start=1):
            where = f"{path}: home #{i}"
            if not isinstance(item.get("home_id"), str) or not item["home_id"]:
                raise ValueError(f"{where}: 'home_id' is required and must be a non-empty string")
            home_tz[item["home_id"]] = _check_timezone(item.get("timezone"), where)
            if "latitude" in item or "longitude" in item:
                lat, lon = item.get("latitude"), item.get("longitude")
                if not (isinstance(lat, (int, float)) and isinstance(lon, (int, float))
                        and -90 <= lat <= 90 and -180 <= lon <= 180):
                    raise ValueError(f"{where}: 'latitude' and 'longitude' go together, in degrees "
                                     f"(-90..90, -180..180), got {lat!r}, {lon!r}")
                locations[item["home_id"]] = (float(lat), float(lon))
        return cls(entries, home_tz, locations)

    def lookup(self, source: Source, vendor_id: str, channel: int | None,
               component: str | None = None) -> RegistryEntry | None:
        """The entry of this channel: the one naming ``component`` if there is one, else the one
        naming none."""
        for kind in ((component, None) if component is not None else (None,)):
            entry = self._index.get((source, vendor_id, channel, kind))
            if entry is None and channel in (None, 0):
                # A single-channel device may be registered with or without channel 0.
                entry = self._index.get((source, vendor_id, 0 if channel is None else None, kind))
            if entry is not None:
                return entry
        return None

    def tasmota_topics(self) -> dict[str, str]:
        """Telemetry topic -> Tasmota topic id, for the devices whose layout was changed."""
        return self._tasmota_topics

    def zigbee2mqtt_names(self) -> dict[str, frozenset[str]]:
        """Base topic -> the friendly names registered under it (the default base always there),
        longest base first."""
        return self._z2m_names

    def entries(self) -> list[RegistryEntry]:
        return list(self._entries)

    def device_infos(self) -> list[DeviceInfo]:
        return [DeviceInfo(e.home_id, e.device_id, e.kind, e.source, vendor_id=e.vendor_id,
                           channel=e.channel, timezone=e.timezone) for e in self._entries]
