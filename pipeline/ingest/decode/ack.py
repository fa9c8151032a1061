"""Device acknowledgements: ``shems/<home>/<device>/ack`` with
``{"command_id": str, "status": "applied"|"scheduled"|"rejected", "state": "on"|"off",
"ts": ISO 8601 | epoch (default: receive time), "message": str}``."""

from __future__ import annotations

from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, obj, parse_ts, shown
from pipeline.reasons import DeadLetterCode
from pipeline.records import AckStatus, CommandAck, CommandState

_STATUSES = ", ".join(s.value for s in AckStatus)
_STATES = ", ".join(s.value for s in CommandState)


def _text(body: dict, field: str, *, required: bool) -> str:
    value = body.get(field)
    if value is None:
        if required:
            raise DecodeError(f"missing field {field}", DeadLetterCode.MISSING_FIELD)
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{field} must be a string, got {shown(value)}")
    return value


def decode_ack(home_id: str, device_id: str, data: object, received_at: datetime) -> CommandAck:
    body = obj(data, "ack payload")
    command_id = _text(body, "command_id", required=True)
    if not 0 < len(command_id) <= 64 or not command_id.isprintable():
        raise DecodeError(f"command_id must be 1-64 printable characters, got {shown(command_id)}")
    status, state = _text(body, "status", required=True), _text(body, "state", required=True)
    try:
        status_value = AckStatus(status)
    except ValueError:
        raise DecodeError(f"status {shown(status)} is not one of {_STATUSES}") from None
    try:
        state_value = CommandState(state)
    except ValueError:
        raise DecodeError(f"state {shown(state)} is not one of {_STATES}") from None
    return CommandAck(home_id, device_id, command_id, status_value, state_value,
                      parse_ts(body.get("ts"), received_at), received_at,
                      _printable(_text(body, "message", required=False)[:500]))


def _printable(text: str) -> str:
    """A device's message is shown to people and stored: control characters (NUL included, which
    PostgreSQL's text refuses) become U+FFFD."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text)
