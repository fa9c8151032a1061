"""``shems notify``: the notifier, a process of its own beside the flow.

Each poll (1) reads the anomalies and new recommendations stored since its cursor, and (every
15 minutes) works out which homes' months are over or projected over their budgets
(``ui.energy.budget_alerts``), turns them into notices (pipeline/notify) and queues each once per subscribed user (the store's
``notifications`` table is the dedupe log), then (2) sends what is queued through Apprise to each
user's targets, except to users inside their quiet hours, whose notices wait for the end of them.

Why a process and not a step of ``shems run``: sending is slow, failing network I/O (an SMTP
server that takes 30 s, a webhook that is down) and would stall a Bytewax worker and every
reading behind it; the flow stays pure and fast, the notifier can be restarted, scaled to zero or
run by cron (``--once``) without touching ingest, and budget alerts or anything else that writes
the store reach it the same way. Polling is idempotent: a notice is queued with ``ON CONFLICT DO
NOTHING`` on (user, event key) and marked sent per target, so a crash between sending and
recording repeats at most that one message to that one target.

Apprise URLs are secrets: Apprise's own log records go to a callback (never to a handler of
ours), and an error is stored and logged only after ``mask_secrets`` and with every target URL
of the user replaced by its masked form.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pipeline.logs import get_logger, mask_secrets
from pipeline.records import BudgetAlert
from ui.cost import load_pricing
from ui.db import Database
from ui.energy import budget_alerts
from ui.notifications import NotifyStore, Pending, Sender, apprise_send, send_to_targets
from ui.settings import load_settings

log = get_logger(__name__)

CURSOR = "events"
# How late an event may reach the store after it happened (a silent meter is judged minutes to
# hours later; a home's recommendations are evaluated after its local midnight) and still be
# told: the cursor trails the wall clock by this much, and the dedupe log stops repeats.
DEFAULT_LOOKBACK = timedelta(hours=48)
MAX_ATTEMPTS = 8

@dataclass(frozen=True, slots=True)
class PollResult:
    queued: int = 0
    sent: int = 0
    held: int = 0  # inside quiet hours
    failed: int = 0


class Notifier:
    def __init__(self, db: Database, *, send: Sender = apprise_send, timezone_name: str = "UTC",
                 lookback: timedelta = DEFAULT_LOOKBACK, since: datetime | None = None,
                 max_attempts: int = MAX_ATTEMPTS, budget_every: timedelta = timedelta(minutes=15)) -> None:
        self.store = NotifyStore(db)
        self.send = send
        self.timezone = timezone_name
        self.lookback = lookback
        self.since = since  # the first run's cursor (default: now, so history is not told)
        self.max_attempts = max_attempts
        # A month's projection moves slowly and costs a month of minutes per home with a budget to
        # work out: checked at most this often (the dedupe log keeps one alert per month anyway).
        self.budget_every = budget_every
        self._budgets_due: datetime | None = None

    def _budget_alerts(self, now: datetime) -> list[BudgetAlert]:
        try:
            return budget_alerts(self.store.db, load_pricing(self.store.db, load_settings()), self.timezone, now)
        except Exception as exc:  # a bad tariff row must not stop anomalies from being told
            log.warning("notify_budget_failed", error=mask_secrets(str(exc)))
            return []

    def poll(self, now: datetime | None = None) -> PollResult:
        now = now or datetime.now(timezone.utc)
        cursor = self.store.cursor(CURSOR)
        if cursor is None:
            cursor = self.since or now
        queued = sum(self.store.enqueue(n, now) for n in self.store.notices_since(cursor))
        self.store.set_cursor(CURSOR, max(cursor, now - self.lookback))
        if self._budgets_due is None or now >= self._budgets_due:
            queued += sum(self.store.enqueue_budget(a, now) for a in self._budget_alerts(now))
            self._budgets_due = now + self.budget_every
        sent = held = failed = 0
        for p in self.store.pending(self.max_attempts):
            outcome = self._deliver(p, now)
            sent += outcome == "sent"
            held += outcome == "held"
            failed += outcome == "failed"
        result = PollResult(queued, sent, held, failed)
        if queued or sent or failed:
            log.info("notify_poll", queued=queued, sent=sent, held=held, failed=failed)
        return result

    def _deliver(self, p: Pending, now: datetime) -> str:
        prefs = self.store.prefs(p.username)
        if p.kind not in {k.value for k in prefs.kinds}:
            self.store.record_attempt(p, p.delivered_to, True, "kind turned off before sending", now)
            return "skipped"
        quiet = prefs.quiet_hours(self.store.home_timezone(p.home_id) or self.timezone)
        if quiet is not None and quiet.active(now):
            return "held"
        targets = self.store.targets(p.username)
        if not targets:
            return "held"
        reached, error = send_to_targets(targets, p.title, p.body, self.send, p.delivered_to)
        delivered = set(p.delivered_to) | reached
        done = all(t.id in delivered for t in targets)
        self.store.record_attempt(p, delivered, done, error, now)
        if error:
            log.warning("notify_failed", user=p.username, kind=p.kind, home=p.home_id, error=error,
                        attempt=p.attempts + 1)
        return "sent" if done else "failed"

    def run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - a store outage: try again next poll
                log.warning("notify_poll_failed", error=mask_secrets(f"{type(exc).__name__}: {exc}"))
            stop.wait(interval_s)
