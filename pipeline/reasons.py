"""Why a message became a dead letter: a short, closed set of codes.

The code goes in ``DeadLetter.error`` and is the label of the dead-letter metric, so the set must
stay small and fixed (a free-text reason would explode the label space); the reason sentence
beside it in ``DeadLetter.reason`` says what exactly was wrong with this message.
"""

from __future__ import annotations

from enum import Enum


class DeadLetterCode(str, Enum):
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    INVALID_JSON = "invalid_json"
    NOT_UTF8 = "not_utf8"
    UNKNOWN_TOPIC = "unknown_topic"
    UNREGISTERED_DEVICE = "unregistered_device"
    BAD_ID = "bad_id"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    NOT_FINITE = "not_finite"
    OUT_OF_BOUNDS = "out_of_bounds"
    MISSING_FIELD = "missing_field"
    INVALID_PAYLOAD = "invalid_payload"
    UNSUPPORTED_MEASUREMENT = "unsupported_measurement"
    RATE_LIMITED = "rate_limited"
    EXCEPTION = "exception"

    @property
    def message(self) -> str:
        """What the code means, for a person reading dashboards or the dead-letter table."""
        return MESSAGES[self]


MESSAGES: dict[DeadLetterCode, str] = {
    DeadLetterCode.TOO_LARGE: "the payload or topic is longer than the configured limit",
    DeadLetterCode.TOO_DEEP: "the JSON nests arrays/objects deeper than the configured limit",
    DeadLetterCode.INVALID_JSON: "the payload is not valid JSON (NaN, Infinity and numbers "
                                 "beyond a double are not JSON either)",
    DeadLetterCode.NOT_UTF8: "the payload is not UTF-8 text",
    DeadLetterCode.UNKNOWN_TOPIC: "no decoder handles this topic",
    DeadLetterCode.UNREGISTERED_DEVICE: "a vendor device that is not in the registry",
    DeadLetterCode.BAD_ID: "a home, device or vendor id that is empty, too long or has "
                           "characters an id may not have",
    DeadLetterCode.BAD_TIMESTAMP: "a time stamp that cannot be read",
    DeadLetterCode.TIMESTAMP_TOO_OLD: "a time stamp before the configured earliest time",
    DeadLetterCode.TIMESTAMP_IN_FUTURE: "a time stamp further ahead of its arrival than allowed",
    DeadLetterCode.NOT_FINITE: "a measurement that is NaN or infinite",
    DeadLetterCode.OUT_OF_BOUNDS: "a measurement outside its configured bounds",
    DeadLetterCode.MISSING_FIELD: "a required field is missing",
    DeadLetterCode.INVALID_PAYLOAD: "a field of the wrong type or value",
    DeadLetterCode.UNSUPPORTED_MEASUREMENT: "power or energy in a part of a message no decoder "
                                            "understands (e.g. an unknown Shelly component)",
    DeadLetterCode.RATE_LIMITED: "a device sending more readings a second of its own clock than "
                                  "allowed (pipeline/ingest/flood.py): counted, not stored",
    DeadLetterCode.EXCEPTION: "a decoder failed unexpectedly on this message (a bug to report)",
}
