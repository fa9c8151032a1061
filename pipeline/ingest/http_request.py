"""What an HTTP request carrying readings becomes: readings to publish, dead letters to keep, and
the status to answer with. Pure: the service (pipeline/tools/http_ingest.py) only reads the body,
authenticates, and does the I/O this decides.

Native batches (``POST /api/v1/homes/<home>/readings``) are judged exactly as the flow judges a
native MQTT message: each object becomes the payload of ``shems/<home>/<device>/reading`` and goes
through :func:`pipeline.ingest.decode.decode`, so bounds, codes and sentences are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from pipeline.ingest.decode import decode, parse_payload
from pipeline.ingest.decode.common import DecodeError
from pipeline.ingest.registry import Registry
from pipeline.ingest.validation import check_id
from pipeline.reasons import DeadLetterCode
from pipeline.records import DeadLetter, RawMessage, Reading
from pipeline.settings import ValidationSettings

# Where an HTTP dead letter was stopped (DeadLetter.step).
STEP = "http"
_NO_REGISTRY = Registry.empty()  # native readings need none


@dataclass(slots=True)
class Rejection:
    """One rejected part of a request, as the client is told about it."""

    index: int | None  # the item in a batch; None: the whole request
    error: str  # the dead-letter code
    reason: str


@dataclass(slots=True)
class Outcome:
    readings: list[Reading] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    too_large: bool = False

    def reject(self, dead: DeadLetter, index: int | None) -> None:
        self.dead_letters.append(dead)
        self.rejections.append(Rejection(index, dead.error, dead.reason))

    @property
    def status(self) -> int:
        """413 for a body over the bound, 400 when anything was rejected (what was accepted is
        still published: the body says how much), else 200."""
        if self.too_large:
            return 413
        return 400 if self.rejections else 200

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"accepted": len(self.readings)}
        if self.rejections:
            out["error"] = self.rejections[0].error
            out["rejected"] = [{"index": r.index, "error": r.error, "reason": r.reason}
                               for r in self.rejections]
        return out


def dead_letter(received_at: datetime, where: str, payload: bytes | str, reason: str,
                code: DeadLetterCode | str) -> DeadLetter:
    error = code.value if isinstance(code, DeadLetterCode) else code
    return DeadLetter.of(received_at, f"http:{where}", payload, reason, step=STEP, error=error)


def too_large(received_at: datetime, where: str, head: bytes, size: int | None,
              validation: ValidationSettings) -> Outcome:
    """A body over ``max_payload_bytes`` (the bound of one MQTT message): refused whole."""
    told = f"{size} bytes" if size is not None else "longer than that"
    out = Outcome(too_large=True)
    out.reject(dead_letter(received_at, where, head,
                           f"body is {told} (limit {validation.max_payload_bytes})",
                           DeadLetterCode.TOO_LARGE), None)
    return out


def native_batch(body: bytes, home_id: str, device_id: str | None, where: str,
                 received_at: datetime, validation: ValidationSettings) -> Outcome:
    """One native object or a list of them. Without a device in the path each object names its
    ``device_id``; a ``home_id`` in an object must be the request's home."""
    out = Outcome()
    if len(body) > validation.max_payload_bytes:
        return too_large(received_at, where, body, len(body), validation)
    try:
        data = parse_payload(body, validation)
    except DecodeError as exc:
        out.reject(dead_letter(received_at, where, body, str(exc), exc.code), None)
        return out
    items = data if isinstance(data, list) else [data]
    for index, item in enumerate(items):
        at = f"{where}#{index}"
        raw = orjson.dumps(item)
        if not isinstance(item, dict):
            out.reject(dead_letter(received_at, at, raw, f"item {index} must be a JSON object, got "
                                   f"{type(item).__name__}", DeadLetterCode.INVALID_PAYLOAD), index)
            continue
        fields = dict(item)
        device = device_id if device_id is not None else fields.pop("device_id", None)
        home = fields.pop("home_id", home_id)
        problem = _ids_problem(home, home_id, device, validation)
        if problem is not None:
            out.reject(dead_letter(received_at, at, raw, problem[1], problem[0]), index)
            continue
        assert isinstance(device, str)
        msg = RawMessage(f"shems/{home_id}/{device}/reading", orjson.dumps(fields), received_at)
        for result in decode(None, msg, _NO_REGISTRY, validation)[1]:
            if isinstance(result, Reading):
                out.readings.append(result)
            elif isinstance(result, DeadLetter):
                out.reject(dead_letter(received_at, at, raw, result.reason, result.error), index)
    return out


def _ids_problem(home: object, home_id: str, device: object, validation: ValidationSettings) -> tuple[DeadLetterCode, str] | None:
    if home != home_id:
        return DeadLetterCode.BAD_ID, f"home_id {str(home)[:80]!r} is not the home of the request"
    if device is None:
        return DeadLetterCode.MISSING_FIELD, "missing field device_id (or name the device in the path)"
    if not isinstance(device, str):
        return DeadLetterCode.BAD_ID, f"device_id must be text, got {type(device).__name__}"
    violation = check_id(device, "device_id", validation)
    return None if violation is None else (violation.code, violation.reason)
