"""The native format: ``shems/<home>/<device>/reading`` with a small JSON object.

``{"ts": ISO 8601 | epoch s | epoch ms, "power_w": W, "energy_wh": Wh (or "energy_kwh"),
"voltage_v": V, "current_a": A, "kind": "meter"|"appliance"|"pv"|"battery"|"ev"}``; only
``power_w`` is required, a missing ``ts`` means the time of receipt. Devices register themselves.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, number, obj, parse_ts, shown
from pipeline.ingest.decode.units import kwh_to_wh
from pipeline.records import DeviceKind, Reading, Source

_KINDS = ", ".join(k.value for k in DeviceKind)


def decode_native(home_id: str, device_id: str, data: object, received_at: datetime) -> Reading:
    body = obj(data, "native payload")
    kind_value = body.get("kind", DeviceKind.APPLIANCE.value)
    try:
        kind = DeviceKind(kind_value)
    except ValueError:
        raise DecodeError(f"kind {shown(kind_value)} is not one of {_KINDS}") from None
    energy = number(body, "energy_wh")
    if energy is None and body.get("energy_kwh") is not None:
        energy = kwh_to_wh(number(body, "energy_kwh", required=True))  # present: checked above
    return Reading(
        home_id=home_id,
        device_id=device_id,
        ts=parse_ts(body.get("ts"), received_at),
        power_w=number(body, "power_w", required=True),
        energy_wh=energy,
        voltage_v=number(body, "voltage_v"),
        current_a=number(body, "current_a"),
        kind=kind,
        source=Source.NATIVE,
    )
