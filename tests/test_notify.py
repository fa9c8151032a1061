"""Notifications end to end: notices from stored anomalies and recommendations (and a budget
alert) reach a real local SMTP server (aiosmtpd) and a real local webhook through Apprise's
``mailto://`` and ``json://``; quiet hours hold them, repeats are suppressed across polls and
restarts, a failing target is retried without repeating to the others, secrets stay out of logs,
and the viewer's "Send test message" arrives. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline.notify.notices import NoticeKind, anomaly_notice, parse_kinds
from pipeline.notify.quiet import QuietHours
from pipeline.notify.targets import check_target, masked_target
from pipeline.records import (
    Anomaly,
    AnomalyKind,
    BudgetAlert,
    BudgetAlertKind,
    DeviceInfo,
    DeviceKind,
    HomeWindow,
    Recommendation,
    Source,
)
from pipeline.tools.notifier import Notifier
from sinks.base import Batch
from sinks.stores import open_store
from tests.conftest import PG_ADMIN_URL, _unique
from tests.notify_servers import smtp_server, wait_for, webhook_server
from ui.accounts import Accounts
from ui.auth import Role
from ui.db import Database
from ui.notifications import NotifyStore, Prefs

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "ui" / "app.py"
HOME, OTHER = "home-a", "home-b"
PASSWORD = "alice-secret-1"


# ------------------------------------------------------------------------------ pure parts

def test_quiet_hours_wrap_midnight_in_local_time_across_dst():
    q = QuietHours(time(22, 0), time(7, 0), "Europe/London")
    assert q.active(datetime(2024, 7, 1, 21, 30, tzinfo=timezone.utc))  # 22:30 BST
    assert not q.active(datetime(2024, 7, 1, 20, 59, tzinfo=timezone.utc))  # 21:59 BST
    assert q.active(datetime(2024, 1, 1, 6, 59, tzinfo=timezone.utc))  # 06:59 GMT
    assert not q.active(datetime(2024, 1, 1, 7, 0, tzinfo=timezone.utc))
    # The end is 07:00 local: 06:00 UTC in summer, 07:00 UTC in winter.
    assert q.ends_after(datetime(2024, 7, 1, 23, 0, tzinfo=timezone.utc)) == datetime(2024, 7, 2, 6, 0, tzinfo=timezone.utc)
    assert q.ends_after(datetime(2024, 1, 1, 23, 0, tzinfo=timezone.utc)) == datetime(2024, 1, 2, 7, 0, tzinfo=timezone.utc)
    assert not QuietHours(time(8, 0), time(8, 0)).active(datetime(2024, 1, 1, 8, 0, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="unknown time zone"):
        QuietHours(time(22, 0), time(7, 0), "Mars/Olympus")


def test_a_notice_key_names_the_event_not_its_text():
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    a = Anomaly(HOME, "fridge", AnomalyKind.LONG_RUNNING, start, None, 5.0, "The fridge runs long.")
    closed = Anomaly(HOME, "fridge", AnomalyKind.LONG_RUNNING, start, start + timedelta(hours=1), 6.0, "other")
    assert anomaly_notice(a).dedupe_key == anomaly_notice(closed).dedupe_key
    later = Anomaly(HOME, "fridge", AnomalyKind.LONG_RUNNING, start + timedelta(days=1), None, 5.0, "x")
    assert anomaly_notice(later).dedupe_key != anomaly_notice(a).dedupe_key
    assert parse_kinds("anomaly, budget") == {NoticeKind.ANOMALY, NoticeKind.BUDGET}
    with pytest.raises(ValueError, match="unknown notification kind 'weather'"):
        parse_kinds("weather")


def test_targets_are_checked_and_shown_masked():
    url = "tgram://123456789:AAHsecretBotToken/987654"
    assert "secret" not in masked_target(url) and masked_target(url).startswith("tgram://***")
    assert "pass" not in masked_target("mailto://user:pass@example.com")
    for bad in ("", "no-scheme", "json://a\nb", "x://" + "a" * 3000):
        with pytest.raises(ValueError):
            check_target(bad)


# ------------------------------------------------------------------------------ the store

@pytest.fixture(params=["sqlite", "postgres"])
def notify_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'notify.db'}"
        return
    name = _unique("shems_notify")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    st.cache_resource.clear()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(notify_url):
    database = Database(notify_url, migrate=True)
    accounts = Accounts(database)
    accounts.add_user("alice", PASSWORD, Role.HOMEOWNER, [HOME], by="test")
    accounts.add_user("bob", "bob-secret-123", Role.HOMEOWNER, [OTHER], by="test")
    store = open_store(notify_url)
    store.upsert_devices([DeviceInfo(HOME, "mains", DeviceKind.METER, Source.NATIVE, timezone="Europe/London")])
    store.close()
    yield database
    database.close()


def write(url: str, **batch) -> None:
    store = open_store(url)
    try:
        store.write(Batch(**batch))
    finally:
        store.close()


def anomaly(at: datetime, home: str = HOME, device: str = "fridge") -> Anomaly:
    return Anomaly(home, device, AnomalyKind.LONG_RUNNING, at, None, 5.0,
                   f"The {device} has been on for 9 hours; it usually runs under 1 hour.")


def recommendation(at: datetime) -> Recommendation:
    return Recommendation(HOME, "", "standby_waste", at, "Cut the always-on power of 310 W",
                          "Your home never uses less than 310 W at night.", 187.2, 52.42, "GBP")


def test_anomalies_and_recommendations_arrive_by_mail_and_webhook_once(db):
    now = datetime.now(timezone.utc)
    notes = NotifyStore(db)
    with smtp_server() as smtp, webhook_server() as hook:
        notes.add_target("alice", smtp.url(), "mail")
        notes.add_target("alice", hook.url("alice"), "hook")
        notes.add_target("bob", hook.url("bob"), "bob's hook")
        notifier = Notifier(db, since=now - timedelta(hours=1))
        write(db.url, anomalies=[anomaly(now - timedelta(minutes=5)),
                                 anomaly(now - timedelta(days=3), device="old")],  # before the cursor
              recommendations=[recommendation(now - timedelta(minutes=1))])
        first = notifier.poll()
        assert (first.queued, first.sent, first.failed) == (2, 2, 0)
        wait_for(smtp.mails, 2)
        assert sorted(m.subject for m in smtp.mails) == [
            f"An appliance has been on for unusually long (fridge) · {HOME}",
            f"New energy-saving tip · {HOME}"]
        texts = " ".join(m.text for m in smtp.mails)
        assert "The fridge has been on for 9 hours" in texts
        assert "187.2 kWh and 52.42 GBP a month" in texts
        assert all(m.to == ["alice@example.com"] for m in smtp.mails)
        posts = wait_for(hook.posts, 2)
        assert {p["path"] for p in posts} == {"/alice"}  # bob is not a member of home-a
        assert any("The fridge has been on for 9 hours" in p["message"] for p in posts)
        assert "old" not in texts

        # Read again, by the same notifier and by a restarted one: nothing repeats.
        assert notifier.poll().sent == 0
        assert Notifier(db).poll() == type(first)()
        # The anomaly closes (the flow re-emits it with ended_at): the same event, no new notice.
        closed = anomaly(now - timedelta(minutes=5))
        write(db.url, anomalies=[Anomaly(closed.home_id, closed.device_id, closed.kind, closed.started_at,
                                         now, closed.score, closed.message)])
        assert Notifier(db).poll().queued == 0
        # A budget alert through the interface for it: once per home, month and budget.
        message = "This month's electricity is projected to cost £93.50, over the budget of £80.00 (£41.20 so far)."
        alert = BudgetAlert(HOME, now.strftime("%Y-%m"), BudgetAlertKind.PROJECTED, 80.0, 93.5, 41.2, "GBP",
                            "forecast", now, message)
        assert notes.enqueue_budget(alert) == 1
        assert notes.enqueue_budget(alert) == 0
        assert notifier.poll().sent == 1
        assert message in wait_for(smtp.mails, 3)[2].text
        assert len(smtp.mails) == 3 and len(hook.posts) == 3


def test_a_home_over_its_budget_is_told_once_by_the_notifier_itself(db):
    """No producer to call: the notifier works out the bill (pipeline.energy.bill) of every home
    with a budget and tells the household once per month, kind and budget."""
    from decimal import Decimal

    from ui.auth import Principal
    from ui.energy import set_budget

    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    notes = NotifyStore(db)
    with webhook_server() as hook:
        notes.add_target("alice", hook.url("alice"))
        notes.add_target("bob", hook.url("bob"))
        # an hour at 2 kW just now: 2 kWh at the viewer's flat 0.28 GBP/kWh is 0.56 so far
        start = now - timedelta(minutes=60)
        if start.astimezone(ZoneInfo("Europe/London")).month != now.astimezone(ZoneInfo("Europe/London")).month:
            pytest.skip("the first hour of a month has no hour of this month to bill yet")
        write(db.url, home_windows=[HomeWindow(HOME, start + timedelta(minutes=i), 2000.0, 2000.0, 2000.0,
                                               2000.0 / 60, 1) for i in range(int((now - start).seconds // 60))])
        alice = Principal("alice", Role.HOMEOWNER, frozenset({HOME}))
        set_budget(db, Accounts(db), alice, HOME, Decimal("0.01"), "GBP", now)
        notifier = Notifier(db, since=now)
        first = notifier.poll(now + timedelta(minutes=1))
        posts = wait_for(hook.posts, 1)
        assert first.queued == 1 and {p["path"] for p in posts} == {"/alice"}
        assert "over the budget of £0.01" in posts[0]["message"]
        # the next check (15 minutes on) finds the same month over the same budget: no repeat
        assert notifier.poll(now + timedelta(minutes=20)).queued == 0
        assert Notifier(db).poll(now + timedelta(minutes=21)).queued == 0


def test_kinds_a_user_turned_off_are_not_sent(db):
    now = datetime.now(timezone.utc)
    notes = NotifyStore(db)
    with webhook_server() as hook:
        notes.add_target("alice", hook.url())
        notes.set_prefs("alice", Prefs(frozenset({NoticeKind.RECOMMENDATION})))
        write(db.url, anomalies=[anomaly(now)], recommendations=[recommendation(now)])
        assert Notifier(db, since=now - timedelta(minutes=1)).poll().sent == 1
        assert [p["title"] for p in wait_for(hook.posts, 1)] == [f"New energy-saving tip · {HOME}"]


def test_quiet_hours_hold_notices_until_they_end(db):
    now = datetime.now(timezone.utc)
    notes = NotifyStore(db)
    local = now.astimezone(ZoneInfo("Europe/London"))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=1)).strftime("%H:%M")
    with webhook_server() as hook:
        notes.add_target("alice", hook.url())
        # No zone of her own: quiet hours are in her home's zone (Europe/London from the registry).
        notes.set_prefs("alice", Prefs(quiet_start=start, quiet_end=end))
        write(db.url, anomalies=[anomaly(now)])
        notifier = Notifier(db, since=now - timedelta(minutes=1))
        held = notifier.poll(now)
        assert (held.queued, held.sent, held.held) == (1, 0, 1)
        assert notifier.poll(now + timedelta(minutes=30)).held == 1
        assert hook.posts == []
        after = notifier.poll(now + timedelta(hours=1, minutes=1))
        assert (after.sent, after.held) == (1, 0)
        assert len(wait_for(hook.posts, 1)) == 1


def test_a_failing_target_is_retried_without_repeating_to_the_others_and_its_secret_stays_out(db, capfd):
    now = datetime.now(timezone.utc)
    notes = NotifyStore(db)
    with webhook_server() as good, webhook_server() as bad:
        notes.add_target("alice", good.url())
        notes.add_target("alice", f"json://user:T0pS3cretT0ken@127.0.0.1:{bad.port}/x", "flaky")
        bad.status = 500
        write(db.url, anomalies=[anomaly(now)])
        notifier = Notifier(db, since=now - timedelta(minutes=1))
        r = notifier.poll()
        assert (r.sent, r.failed) == (0, 1)
        assert len(wait_for(good.posts, 1)) == 1
        (row,) = notes.history("alice")
        assert row[4] is None and "flaky" in row[5] and "T0pS3cret" not in row[5]
        bad.status = 200
        assert notifier.poll().sent == 1
        assert len(wait_for(bad.posts, 1)) == 1
        assert len(good.posts) == 1  # not repeated to the target that had it
    out = capfd.readouterr()
    assert "T0pS3cret" not in out.out + out.err


def test_shems_notify_once_as_a_process(db):
    now = datetime.now(timezone.utc)
    with webhook_server() as hook:
        NotifyStore(db).add_target("alice", hook.url())
        write(db.url, anomalies=[anomaly(now)])
        cmd = [sys.executable, "-m", "pipeline.cli", "notify", "--store-url", db.url, "--once",
               "--since", (now - timedelta(minutes=1)).isoformat()]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "queued 1, sent 1" in done.stdout
        assert len(wait_for(hook.posts, 1)) == 1
        again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert "queued 0, sent 0" in again.stdout
        assert len(hook.posts) == 1


def test_shems_notify_with_an_unreachable_store_is_one_line():
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "notify", "--once", "--store-url",
                           "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("shems notify: error: cannot open the store")


# ------------------------------------------------------------------------------ the viewer

def test_the_viewer_adds_a_target_shows_it_masked_and_its_test_message_arrives(db, monkeypatch):
    for key in list(os.environ):
        if key.startswith("SHEMS_UI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SHEMS_STORE_URL", db.url)
    token = Accounts(db).sign_in("alice", PASSWORD).token
    with smtp_server() as smtp, webhook_server() as hook:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.session_state["session_token"] = token
        at.run()
        at.switch_page("views/account.py").run()
        assert not at.exception, [e.value for e in at.exception]
        secret_hook = f"json://hook:Hunter2Secret@127.0.0.1:{hook.port}/viewer"
        at.text_input(key="target_label").input("my hook")
        at.text_input(key="target_url").input(secret_hook)
        next(b for b in at.button if b.label == "Add target").click().run()
        at.text_input(key="target_url").input(smtp.url("alice@example.org"))
        next(b for b in at.button if b.label == "Add target").click().run()
        assert not at.error, [e.value for e in at.error]
        page = re.sub(r"\\(.)", r"\1", " ".join(str(m.value) for m in at.markdown)).replace("\u2060", "")
        assert "**my hook** · json://***ewer" in page and "**target** · mailto://***.org" in page
        assert "Hunter2Secret" not in page
        at.button(key="send_test").click().run()
        assert not at.error, [e.value for e in at.error]
        assert "Test message sent to 2 of 2 targets." in at.success[0].value
        (post,) = wait_for(hook.posts, 1)
        assert post["title"] == "shems test message" and "Hello alice" in post["message"]
        (mail,) = wait_for(smtp.mails, 1)
        assert mail.to == ["alice@example.org"] and mail.subject == "shems test message"
        # A URL Apprise does not know is refused with a sentence, not stored.
        at.text_input(key="target_url").input("nosuchservice://x")
        next(b for b in at.button if b.label == "Add target").click().run()
        assert "Apprise does not understand this URL" in at.error[0].value
        assert "\u2060" not in at.error[0].value  # nothing invisible a user might copy back
        assert len(NotifyStore(db).targets("alice")) == 2
