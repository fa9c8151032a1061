"""``shems http``: readings over HTTP for devices that cannot speak MQTT (Starlette on uvicorn).

Routes (every one needs a home's API key, ``Authorization: Bearer KEY`` or ``apikey=KEY``):

- ``POST /api/v1/homes/<home>/readings``: one native object or a list, each with a ``device_id``;
- ``POST /api/v1/homes/<home>/devices/<device>/readings``: the same without ``device_id``;
- ``GET|POST /input/post`` (also ``/input/post.json``, ``/input/post/<node>``) and
  ``/input/bulk`` (``.json``): emoncms's input API, see pipeline/ingest/emoncms.py;
- ``GET /healthz``: no key; 200 while the broker connection is up, else 503.

A request is judged by the pure functions of pipeline/ingest/http_request.py and emoncms.py.
Accepted readings are published, QoS 1, to ``<prefix>shems/<home>/<device>/reading`` (the native
topic, with the time stamp filled in) so the running flow stores them as any native message, and
the answer waits for the broker's acknowledgement; bad input is written to ``dead_letter``
(step ``http``) directly. Order of checks: body size bound (the key may be in a form body), wrong
keys from the client's address (429), key (401), home (403), rate (429, per key), then the body
(413, 400).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import parse_qsl

import paho.mqtt.client as mqtt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.config import parse_mqtt_url
from pipeline.ingest.emoncms import input_bulk, input_post
from pipeline.ingest.http_request import Outcome, native_batch, too_large
from pipeline.ingest.rate_limit import RateLimiter
from pipeline.logs import get_logger
from pipeline.records import DeadLetter, Reading
from pipeline.settings import ValidationSettings
from pipeline.tools.publisher import native_payload, native_topic
from sinks.apikeys import ApiKey, ApiKeys
from sinks.base import Batch

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    topic_prefix: str = ""
    rate_per_s: float = 2.0  # sustained requests per second per key
    burst: float = 30.0  # requests a key may send at once (a device's backlog after an outage)
    publish_timeout_s: float = 10.0  # for the broker's PUBACKs; then 503
    failed_keys_per_s: float = 0.2  # wrong keys per client address (then 429)
    failed_keys_burst: float = 20.0
    node_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # emoncms positions
    validation: ValidationSettings = field(default_factory=ValidationSettings)


class ReadingPublisher(Protocol):
    async def publish(self, readings: Sequence[Reading]) -> bool:
        """True once the broker acknowledged every reading."""
        ...

    def connected(self) -> bool: ...


class BrokerPublisher:
    """One paho client (MQTT 5, QoS 1); an answer waits for the PUBACKs of its readings."""

    def __init__(self, url: str, client_id: str, topic_prefix: str, timeout_s: float) -> None:
        endpoint = parse_mqtt_url(url)
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id, protocol=mqtt.MQTTv5)
        endpoint.configure(self.client)
        self.client.max_inflight_messages_set(1000)
        # Bounded: while the broker is away requests are refused (503), not queued without end.
        self.client.max_queued_messages_set(10_000)
        self.client.reconnect_delay_set(1, 30)
        self.client.connect(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                self.close()
                raise ConnectionError(f"the broker {endpoint} did not accept the connection "
                                      f"within {timeout_s:g} s")
            time.sleep(0.02)

    def connected(self) -> bool:
        return bool(self.client.is_connected())

    async def publish(self, readings: Sequence[Reading]) -> bool:
        if not self.client.is_connected():
            return False
        infos = [self.client.publish(native_topic(r, self.topic_prefix), native_payload(r), qos=1)
                 for r in readings]
        if any(info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) for info in infos):
            return False  # not connected: paho keeps them and sends on reconnect; the client retries
        deadline = time.monotonic() + self.timeout_s
        while not all(info.is_published() for info in infos):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _error(status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "reason": reason}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> tuple[bytes, int | None, bool]:
    """(at most limit + 1 bytes of the body, its declared size, whether it is over the limit);
    a body over the limit is not read further."""
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else None
    if size is not None and size > limit:
        return b"", size, True
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return b"".join(chunks)[: limit + 1], size, True
    return b"".join(chunks), size, False


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class HttpIngest:
    """The request handling: checks in order, then the pure outcome, then I/O."""

    def __init__(self, keys: ApiKeys, publisher: ReadingPublisher, settings: HttpSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.publisher = publisher
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_per_s, settings.burst)
        # Wrong keys per client address: each costs a store lookup, so a client that keeps
        # guessing is slowed down before it reaches the store.
        self.failures = RateLimiter(settings.failed_keys_per_s, settings.failed_keys_burst)
        self.clock = clock

    async def handle(self, request: Request, judge: Callable[[bytes, dict[str, str], ApiKey, datetime],
                                                             Outcome],
                     home_in_path: str | None = None, emoncms: bool = False) -> Response:
        received_at = datetime.now(timezone.utc)
        validation = self.settings.validation
        body, size, over = await _read_body(request, validation.max_payload_bytes)
        params: dict[str, str] = {}
        if not over and "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            try:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                                        max_num_fields=1000))
            except ValueError:
                return _error(400, "invalid_payload", "more than 1000 form fields")
        params.update(request.query_params.items())  # as emoncms: the query wins over the form
        key = _bearer(request) or params.get("apikey")
        if not key:
            if over:
                return _error(413, "too_large", f"body over {validation.max_payload_bytes} bytes")
            return _error(401, "unauthorized", "no API key: Authorization: Bearer KEY or apikey=KEY",
                          {"WWW-Authenticate": "Bearer"})
        client = request.client.host if request.client else "?"
        blocked = self.failures.wait(client, self.clock())
        if blocked > 0:
            return _error(429, "rate_limited", "too many wrong API keys from this address",
                          {"Retry-After": str(max(1, math.ceil(blocked)))})
        try:
            record = await run_in_threadpool(self.keys.lookup, key)
        except Exception as exc:  # noqa: BLE001 - the store is down: the device retries later
            log.warning("http_key_lookup_failed", error=type(exc).__name__)
            return _error(503, "store_unavailable", "cannot check the API key now; retry later",
                          {"Retry-After": "10"})
        if record is None:
            self.failures.take(client, self.clock())
            log.info("http_unknown_key", client=client[:64])
            return _error(401, "unauthorized", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
        if home_in_path is not None and home_in_path != record.home_id:
            return _error(403, "forbidden", "this API key writes another home")
        wait = self.limiter.take(record.key_id, self.clock())
        if wait > 0:
            return _error(429, "rate_limited", f"over {self.settings.rate_per_s:g} requests/s "
                          f"(burst {self.settings.burst:g}) for this key",
                          {"Retry-After": str(max(1, math.ceil(wait)))})
        where = request.url.path
        if over:
            # The head of the body is kept as the dead letter's payload, never the key with it.
            head = body.replace(key.encode("utf-8", "replace"), b"***")
            outcome = too_large(received_at, where, head, size, validation)
        else:
            outcome = judge(body, params, record, received_at)
        published = True
        if outcome.readings:
            published = await self.publisher.publish(outcome.readings)
        if outcome.dead_letters:
            await self._store_dead_letters(outcome.dead_letters)
        (log.debug if outcome.status == 200 and published else log.info)(
            "http_request", path=where[:200], home=record.home_id, key=record.key_id,
            status=outcome.status, readings=len(outcome.readings),
            dead_letters=len(outcome.dead_letters), published=published)
        if not published:
            return _error(503, "broker_unavailable", "the broker did not acknowledge the readings; "
                          "retry later (a retry stores nothing twice)", {"Retry-After": "5"})
        if emoncms and outcome.status == 200:
            return PlainTextResponse("ok")  # what emoncms answers and its clients look for
        return JSONResponse(outcome.body(), status_code=outcome.status)

    async def _store_dead_letters(self, dead: list[DeadLetter]) -> None:
        def write() -> None:
            with self.keys.lock:
                self.keys.store.write(Batch(dead_letters=dead))

        try:
            await run_in_threadpool(write)
        except Exception as exc:  # noqa: BLE001 - the client still hears why; the log says we lost it
            log.warning("http_dead_letters_not_stored", count=len(dead), error=type(exc).__name__,
                        detail=str(exc)[:200])


def build_app(ingest: HttpIngest) -> Starlette:
    validation = ingest.settings.validation
    names = ingest.settings.node_names

    async def native(request: Request) -> Response:
        home = request.path_params["home"]
        device = request.path_params.get("device")
        return await ingest.handle(
            request, lambda body, params, key, at: native_batch(
                body, key.home_id, device, request.url.path, at, validation), home_in_path=home)

    async def post(request: Request) -> Response:
        node = request.path_params.get("node")
        return await ingest.handle(
            request, lambda body, params, key, at: input_post(
                params, node, key.home_id, request.url.path, at, validation, names), emoncms=True)

    async def bulk(request: Request) -> Response:
        return await ingest.handle(
            request, lambda body, params, key, at: input_bulk(
                params, key.home_id, request.url.path, at, validation, names), emoncms=True)

    async def healthz(request: Request) -> Response:
        if ingest.publisher.connected():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "broker_unavailable"}, status_code=503)

    both = ["GET", "POST"]
    return Starlette(routes=[
        Route("/api/v1/homes/{home}/readings", native, methods=["POST"]),
        Route("/api/v1/homes/{home}/devices/{device}/readings", native, methods=["POST"]),
        Route("/input/post", post, methods=both),
        Route("/input/post.json", post, methods=both),
        Route("/input/post/{node}", post, methods=both),
        Route("/input/bulk", bulk, methods=both),
        Route("/input/bulk.json", bulk, methods=both),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def serve(app: Starlette, host: str, port: int, ssl_certfile: str | None = None,
          ssl_keyfile: str | None = None) -> None:
    import uvicorn

    # No access log: emoncms clients put the API key in the query string.
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            server_header=False, timeout_keep_alive=30)
    uvicorn.Server(config).run()
