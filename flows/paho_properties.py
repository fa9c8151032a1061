"""paho-mqtt's MQTT 5 properties, decoded at the cost the receivers can afford.

paho-mqtt 2.2 builds a ``Properties`` object for every PUBLISH it receives: its constructor
rebuilds two lookup tables of 27 entries, and ``unpack`` first deletes each of the 27 possible
attributes by name. Profiled on a drain (issue 13), that was a quarter of the MQTT client
process's CPU, for messages that carry no properties at all.

:func:`share_property_tables` makes the decoder build :class:`SharedTablesProperties` instead:
the same class to every reader (a subclass), with the tables built once and shared (paho only
reads them), and no clearing of a fresh object that holds nothing yet. Decoded properties are
equal to paho's own (tests/test_paho_properties.py compares them on generated property sets). It
is installed by the flow's receivers, not on import: the drain benchmark's counting subscriber
stays stock paho.
"""

from __future__ import annotations

import paho.mqtt._packet as paho_packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_TABLES = Properties(PacketTypes.PUBLISH)
_NONE = b"\x00"  # the property length (a variable byte integer) of a packet without properties
_OWN = ("packetType", "types", "names", "properties")


class SharedTablesProperties(Properties):
    """paho's ``Properties`` with the lookup tables shared by all instances."""

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's parameter name
        # object.__setattr__, as paho's own __setattr__ does for these four names.
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", _TABLES.types)
        object.__setattr__(self, "names", _TABLES.names)
        object.__setattr__(self, "properties", _TABLES.properties)

    def unpack(self, buffer: bytes | bytearray) -> tuple[Properties, int]:
        # A fresh object holds only paho's four tables (nothing to clear first, as paho does).
        if buffer[:1] == _NONE and len(self.__dict__) == len(_OWN):
            return self, 1
        return super().unpack(buffer)


def share_property_tables() -> None:
    """Make paho's packet decoder build :class:`SharedTablesProperties` (idempotent; only when
    paho still decodes through the module-level name this was written against)."""
    if getattr(paho_packet, "Properties", None) is Properties:
        paho_packet.Properties = SharedTablesProperties  # type: ignore[misc]
