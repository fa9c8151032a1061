"""Notices: one message about one event of a home, with the key that keeps it from repeating.

A notice is made from a stored anomaly, a new recommendation, or a budget alert (the bill's
projection above the homeowner's budget). Its ``dedupe_key`` names the event, not the text: the
same anomaly (home, device, kind, start) or recommendation (home, kind, device, first issued) is
one key however often it is read again, so a notifier that restarts, or two that run at once,
never tell a user twice (the store keys sent notices by user and key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from pipeline.records import Anomaly, BudgetAlert, BudgetAlertKind, Recommendation


class NoticeKind(str, Enum):
    ANOMALY = "anomaly"
    BUDGET = "budget"
    RECOMMENDATION = "recommendation"


ALL_KINDS: tuple[NoticeKind, ...] = tuple(NoticeKind)

# Titles carry the home so one inbox can follow several homes; bodies stay plain text (e-mail,
# push and webhooks all show it as typed).
_ANOMALY_TITLES = {
    "high_consumption": "Unusually high consumption",
    "long_running": "An appliance has been on for unusually long",
    "duty_cycle_drift": "An appliance is cycling differently",
    "flat_line": "A sensor seems stuck",
    "silent": "A meter stopped reporting",
    "counter_backwards": "An energy counter went backwards",
}


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    home_id: str
    dedupe_key: str
    at: datetime  # when the event happened (UTC)
    title: str
    body: str


def _key_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if t.utcoffset() is not None else t.isoformat()


def anomaly_notice(a: Anomaly) -> Notice:
    device = f" ({a.device_id})" if a.device_id else ""
    title = f"{_ANOMALY_TITLES.get(a.kind.value, 'Something unusual')}{device} · {a.home_id}"
    return Notice(NoticeKind.ANOMALY, a.home_id,
                  f"anomaly:{a.home_id}:{a.device_id}:{a.kind.value}:{_key_time(a.started_at)}",
                  a.started_at, title, a.message)


def recommendation_notice(r: Recommendation) -> Notice:
    saving = f"{r.money_per_month:,.2f} {r.currency}" if r.money_per_month else ""
    energy = f"{r.kwh_per_month:,.1f} kWh" if r.kwh_per_month else ""
    per_month = " and ".join(s for s in (energy, saving) if s)
    body = r.title + (f" Estimated saving: {per_month} a month." if per_month else "")
    return Notice(NoticeKind.RECOMMENDATION, r.home_id,
                  f"recommendation:{r.home_id}:{r.kind}:{r.device_id}:{_key_time(r.created_at)}",
                  r.created_at, f"New energy-saving tip · {r.home_id}", f"{body}\n\n{r.detail}")


def budget_notice(b: BudgetAlert) -> Notice:
    """One notice per home, month, kind and budget: "projected over" and then "already over" are
    two events, and raising the budget re-arms both. The body is the alert's own sentence (money
    in the locale it was made for, ``pipeline.energy.bill.budget_alert``)."""
    title = ("Bill over budget" if b.kind is BudgetAlertKind.EXCEEDED else "Bill projected over budget")
    return Notice(NoticeKind.BUDGET, b.home_id, f"budget:{b.home_id}:{b.month}:{b.kind.value}:{b.budget:.2f}",
                  b.created_at, f"{title} · {b.home_id}", b.message)


def test_message(username: str) -> tuple[str, str]:
    """Title and body of the viewer's "send test message" (sent at once: no kinds, no quiet hours,
    no deduplication, since the user asked for it)."""
    return "shems test message", f"Hello {username}: notifications from shems reach this target."


def parse_kinds(text: str) -> frozenset[NoticeKind]:
    """A stored or typed list ``anomaly,budget`` to kinds; ValueError names an unknown one."""
    kinds = set()
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        try:
            kinds.add(NoticeKind(word))
        except ValueError:
            raise ValueError(f"unknown notification kind {word!r}: expected "
                             f"{', '.join(k.value for k in ALL_KINDS)}") from None
    return frozenset(kinds)


def format_kinds(kinds: frozenset[NoticeKind] | set[NoticeKind]) -> str:
    return ",".join(k.value for k in ALL_KINDS if k in kinds)
