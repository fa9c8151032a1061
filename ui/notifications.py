"""Notification settings and notices in the store (migration 0009), shared by the viewer's
Account page and the notifier process (``shems notify``, pipeline/tools/notifier.py).

``notifications`` is the dedupe log and the outbox in one: a notice is one row per user and
event key (``INSERT ... ON CONFLICT DO NOTHING``), so however often an event is read again, by
however many notifiers, a user is told once. ``delivered_to`` lists the targets it reached, so a
retry after a failed target never repeats it to the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipeline.logs import mask_secrets
from pipeline.notify.notices import (
    ALL_KINDS,
    Notice,
    NoticeKind,
    anomaly_notice,
    budget_notice,
    format_kinds,
    parse_kinds,
    recommendation_notice,
)
from pipeline.notify.quiet import QuietHours, parse_hhmm
from pipeline.notify.targets import check_target, masked_target
from pipeline.records import Anomaly, AnomalyKind, BudgetAlert, Recommendation
from sinks.rows import from_us
from ui.db import Database

MAX_TARGETS_PER_USER = 10

# Apprise's log records can hold parts of a target URL: they never reach a handler (not ours, not
# Python's last-resort stderr one); what a failure says is collected per call and masked.
_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG.propagate = False
_APPRISE_LOG.addHandler(logging.NullHandler())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Target:
    id: int
    username: str
    label: str
    url: str = field(repr=False)  # a secret: never in a repr, a log line or a page

    @property
    def masked(self) -> str:
        return masked_target(self.url)


@dataclass(frozen=True, slots=True)
class Prefs:
    kinds: frozenset[NoticeKind] = frozenset(ALL_KINDS)
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str | None = None  # None: the home's

    def quiet_hours(self, fallback_tz: str) -> QuietHours | None:
        if not self.quiet_start or not self.quiet_end:
            return None
        return QuietHours(parse_hhmm(self.quiet_start), parse_hhmm(self.quiet_end),
                          self.timezone or fallback_tz)


@dataclass(frozen=True, slots=True)
class Pending:
    username: str
    dedupe_key: str
    kind: str
    home_id: str
    title: str
    body: str
    event_at: datetime
    delivered_to: frozenset[int]
    attempts: int


class NotifyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ targets and preferences
    def targets(self, username: str) -> list[Target]:
        rows = self.db.rows("SELECT id, username, label, url FROM notify_targets WHERE username = :u "
                            "ORDER BY id", {"u": username})
        return [Target(int(i), u, label, url) for i, u, label, url in rows]

    def add_target(self, username: str, url: str, label: str = "") -> int:
        url = check_target(url)
        import apprise

        if not apprise.Apprise().add(url):
            # Scheme names, not "mailto://" examples: the page shows this escaped, with an
            # invisible joiner in each "://" against autolinking, so a pasted example was refused.
            raise ValueError("Apprise does not understand this URL: it starts with a service's scheme "
                             "(mailto, ntfy, tgram, json, ...) as the Apprise wiki (github.com/caronc/apprise/wiki) "
                             "describes")
        label = " ".join(label.split())[:64]
        with self.db.transaction() as tx:
            (count,), = tx.rows("SELECT count(*) FROM notify_targets WHERE username = :u", {"u": username})
            if count >= MAX_TARGETS_PER_USER:
                raise ValueError(f"at most {MAX_TARGETS_PER_USER} targets per user")
            tx.execute("INSERT INTO notify_targets (username, label, url, created_at) "
                       "VALUES (:u, :l, :url, :at)", {"u": username, "l": label, "url": url, "at": utcnow()})
            (new_id,), = tx.rows("SELECT max(id) FROM notify_targets WHERE username = :u", {"u": username})
        return int(new_id)

    def remove_target(self, username: str, target_id: int) -> bool:
        return self.db.execute("DELETE FROM notify_targets WHERE username = :u AND id = :i",
                               {"u": username, "i": target_id}) == 1

    def prefs(self, username: str) -> Prefs:
        rows = self.db.rows("SELECT kinds, quiet_start, quiet_end, timezone FROM notify_prefs "
                            "WHERE username = :u", {"u": username})
        if not rows:
            return Prefs()
        kinds, start, end, tz = rows[0]
        return Prefs(parse_kinds(kinds), start, end, tz)

    def set_prefs(self, username: str, prefs: Prefs) -> None:
        if prefs.quiet_start or prefs.quiet_end:  # both or neither, each a time, the zone known
            if not (prefs.quiet_start and prefs.quiet_end):
                raise ValueError("quiet hours need a start and an end")
            prefs.quiet_hours("UTC")
        elif prefs.timezone:
            QuietHours(parse_hhmm("00:00"), parse_hhmm("00:00"), prefs.timezone)
        self.db.execute(
            "INSERT INTO notify_prefs (username, kinds, quiet_start, quiet_end, timezone) "
            "VALUES (:u, :k, :s, :e, :tz) ON CONFLICT (username) DO UPDATE SET kinds = excluded.kinds, "
            "quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, timezone = excluded.timezone",
            {"u": username, "k": format_kinds(set(prefs.kinds)), "s": prefs.quiet_start,
             "e": prefs.quiet_end, "tz": prefs.timezone})

    def home_timezone(self, home_id: str) -> str | None:
        rows = self.db.rows("SELECT timezone FROM devices WHERE home_id = :h AND timezone IS NOT NULL "
                            "ORDER BY device_id LIMIT 1", {"h": home_id})
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ events since a cursor
    def cursor(self, name: str) -> datetime | None:
        rows = self.db.rows(f"SELECT {self.db.us('at')} FROM notify_cursor WHERE name = :n", {"n": name})
        return from_us(rows[0][0]) if rows else None

    def set_cursor(self, name: str, at: datetime) -> None:
        self.db.execute("INSERT INTO notify_cursor (name, at) VALUES (:n, :at) "
                        "ON CONFLICT (name) DO UPDATE SET at = excluded.at", {"n": name, "at": at})

    def anomalies_since(self, since: datetime) -> list[Anomaly]:
        us = self.db.us
        rows = self.db.rows(
            f"SELECT home_id, device_id, kind, {us('started_at')}, {us('ended_at')}, score, message "
            "FROM anomalies WHERE started_at >= :since ORDER BY started_at", {"since": since})
        out = []
        for h, d, k, s, e, score, msg in rows:
            try:
                kind = AnomalyKind(k)
            except ValueError:  # a kind a newer flow wrote: still worth telling
                continue
            out.append(Anomaly(h, d, kind, from_us(s), None if e is None else from_us(e), score, msg))
        return out

    def recommendations_since(self, since: datetime) -> list[Recommendation]:
        rows = self.db.rows(
            f"SELECT home_id, device_id, kind, {self.db.us('created_at')}, title, detail, kwh_per_month, "
            "money_per_month, currency FROM recommendations WHERE created_at >= :since AND status = 'new' "
            "ORDER BY created_at", {"since": since})
        return [Recommendation(h, d, k, from_us(c), t, det, kwh, money, cur)
                for h, d, k, c, t, det, kwh, money, cur in rows]

    def notices_since(self, since: datetime) -> list[Notice]:
        return ([anomaly_notice(a) for a in self.anomalies_since(since)]
                + [recommendation_notice(r) for r in self.recommendations_since(since)])

    # ------------------------------------------------------------------ the outbox
    def enqueue(self, notice: Notice, now: datetime | None = None) -> int:
        """Queue a notice for every member of its home who has a target and wants its kind;
        the number queued now (0 for an event already queued: no repeats). This is the way in
        for any producer, e.g. a budget alert: ``enqueue(budget_notice(alert))``."""
        now = now or utcnow()
        members = self.db.rows(
            "SELECT DISTINCT m.username FROM user_homes m JOIN notify_targets t ON t.username = m.username "
            "WHERE m.home_id = :h ORDER BY m.username", {"h": notice.home_id})
        queued = 0
        for (username,) in members:
            if notice.kind not in self.prefs(username).kinds:
                continue
            queued += self.db.execute(
                "INSERT INTO notifications (username, dedupe_key, kind, home_id, title, body, event_at, "
                "queued_at) VALUES (:u, :k, :kind, :h, :t, :b, :ev, :now) "
                "ON CONFLICT (username, dedupe_key) DO NOTHING",
                {"u": username, "k": notice.dedupe_key, "kind": notice.kind.value, "h": notice.home_id,
                 "t": notice.title, "b": notice.body, "ev": notice.at, "now": now})
        return queued

    def enqueue_budget(self, alert: BudgetAlert, now: datetime | None = None) -> int:
        """The bill's budget alert (issue 12, item 3) as a notice: once per home, month and budget."""
        return self.enqueue(budget_notice(alert), now)

    def pending(self, max_attempts: int) -> list[Pending]:
        rows = self.db.rows(
            f"SELECT username, dedupe_key, kind, home_id, title, body, {self.db.us('event_at')}, "
            "delivered_to, attempts FROM notifications WHERE sent_at IS NULL AND attempts < :m "
            "ORDER BY queued_at, username, dedupe_key", {"m": max_attempts})
        return [Pending(u, k, kind, h, t, b, from_us(ev), _ids(dt), int(n))
                for u, k, kind, h, t, b, ev, dt, n in rows]

    def record_attempt(self, p: Pending, delivered: Iterable[int], done: bool, error: str | None,
                       now: datetime | None = None) -> None:
        """After trying a notice's targets: which were reached, whether it is done, the (masked)
        error of a target that failed."""
        now = now or utcnow()
        self.db.execute(
            "UPDATE notifications SET delivered_to = :d, sent_at = :sent, attempts = attempts + :fail, "
            "last_error = :err WHERE username = :u AND dedupe_key = :k",
            {"d": ",".join(str(i) for i in sorted(set(delivered))), "sent": now if done else None,
             "fail": 0 if done else 1, "err": error, "u": p.username, "k": p.dedupe_key})

    def history(self, username: str, limit: int = 20) -> list[tuple]:
        us = self.db.us
        return self.db.rows(
            f"SELECT kind, home_id, title, {us('queued_at')}, {us('sent_at')}, last_error FROM notifications "
            "WHERE username = :u ORDER BY queued_at DESC LIMIT :n", {"u": username, "n": limit})


def _ids(text: str) -> frozenset[int]:
    return frozenset(int(p) for p in text.split(",") if p.strip().isdigit())


# send(url, title, body) -> None when delivered, else a reason (may contain the URL: masked later)
Sender = Callable[[str, str, str], str | None]


def apprise_send(url: str, title: str, body: str, timeout_s: float = 30.0) -> str | None:
    import apprise

    messages: list[str] = []
    client = apprise.Apprise()
    if not client.add(url):
        return "Apprise does not understand this target URL"
    result = client.notify(body=body, title=title, timeout=timeout_s,
                           log_callback=lambda entry, _plugin: messages.append(entry.message),
                           log_level=logging.WARNING)
    if result:
        return None
    return messages[-1] if messages else "Apprise could not deliver to this target"


def send_to_targets(targets: list[Target], title: str, body: str, send: Sender,
                    skip: frozenset[int] = frozenset()) -> tuple[set[int], str | None]:
    """Send to every target not in ``skip``; the ids reached and the masked error of a failure."""
    reached: set[int] = set()
    errors: list[str] = []
    for t in targets:
        if t.id in skip:
            continue
        try:
            problem = send(t.url, title, body)
        except Exception as exc:  # noqa: BLE001 - one target's failure must not stop the others
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            reached.add(t.id)
        else:
            errors.append(f"{t.label or masked_target(t.url)}: {_scrub(problem, targets)}")
    return reached, "; ".join(errors)[:500] or None


def _scrub(text: str, targets: list[Target]) -> str:
    for t in targets:
        text = text.replace(t.url, masked_target(t.url))
    return " ".join(mask_secrets(text).split())
