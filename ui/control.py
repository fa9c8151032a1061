"""Switching devices from the viewer: authorise, rate-limit, record (command + audit log),
publish to ``shems/<home>/<device>/set``, then judge what came back.

The device's acknowledgement travels device -> MQTT -> flow -> ``command_acks``; the viewer reads
it from the store like everything else. Whether the switch had an effect is judged from the
device's own readings after the acknowledgement (``assess``): a device acknowledged "off" that
still draws power is reported, not taken at its word.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from pipeline.energy.device_control import SWITCHABLE_KINDS, SetCommand, set_topic
from pipeline.records import CommandState
from sinks.rows import from_us
from ui.accounts import Accounts
from ui.auth import AccessDenied, Principal, require_home
from ui.db import TS, Database, Schema
from ui.settings import ViewerSettings


class CommandRefused(Exception):
    """Not sent (rate limit, not switchable, broker unreachable); the message is for the user."""


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    home_id: str
    device_id: str
    state: CommandState
    run_at: datetime | None
    issued_by: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class CommandStatus:
    phase: str  # waiting, scheduled, applied, confirmed, still_drawing, rejected, timeout
    level: str  # info, success, warning, error (how the page shows it)
    message: str
    final: bool  # nothing more will change it: the page stops polling


def send_command(db: Database, accounts: Accounts, settings: ViewerSettings, principal: Principal,
                 home_id: str, device_id: str, state: CommandState,
                 run_at: datetime | None = None) -> Command:
    require_home(principal, home_id)
    kinds = db.rows("SELECT kind FROM devices WHERE home_id = :h AND device_id = :d",
                    {"h": home_id, "d": device_id})
    if not kinds:
        raise AccessDenied(f"There is no device {device_id!r} in home {home_id!r}.")
    if kinds[0][0] not in {k.value for k in SWITCHABLE_KINDS}:
        raise CommandRefused(f"{device_id} is a {kinds[0][0]}: it cannot be switched.")
    now = accounts.clock()
    if run_at is not None and run_at <= now:
        run_at = None  # a time already past means now
    command = Command(f"c-{secrets.token_hex(8)}", home_id, device_id, CommandState(state), run_at,
                      principal.username, now)
    with db.transaction() as tx:
        (recent,) = tx.rows("SELECT count(*) FROM device_commands WHERE issued_by = :u "
                            "AND issued_at > :since",
                            {"u": principal.username, "since": now - timedelta(minutes=1)})[0]
        if recent >= settings.commands_per_minute:
            raise CommandRefused(f"At most {settings.commands_per_minute} commands a minute. "
                                 "Please wait a moment.")
        tx.execute("INSERT INTO device_commands (command_id, home_id, device_id, state, run_at, "
                   "issued_by, issued_at) VALUES (:c, :h, :d, :s, :r, :u, :at)",
                   {"c": command.command_id, "h": home_id, "d": device_id, "s": command.state.value,
                    "r": run_at, "u": principal.username, "at": now})
    try:
        _publish(settings, command)
    except Exception as exc:  # the broker is the one part we cannot make transactional
        accounts.audit(principal.username, "command_failed", home_id, device_id,
                       f"{command.command_id} {command.state.value}: {exc}")
        raise CommandRefused(f"Could not reach the message broker: {exc}") from exc
    accounts.audit(principal.username, "command", home_id, device_id,
                   f"{command.command_id} {command.state.value}"
                   + (f" at {run_at.isoformat()}" if run_at else ""))
    return command


def _publish(settings: ViewerSettings, command: Command) -> None:
    from pipeline.tools.publisher import Publisher

    publisher = Publisher(settings.mqtt_url)
    try:
        publisher.publish_raw(set_topic(command.home_id, command.device_id, settings.topic_prefix),
                              SetCommand(command.command_id, command.state, command.run_at).payload())
        publisher.flush(timeout=5.0)  # the broker has it (PUBACK) before we say "sent"
    finally:
        publisher.client.loop_stop()
        publisher.client.disconnect()


ACK_SCHEMA: Schema = {"status": pl.Utf8, "state": pl.Utf8, "ts": TS, "message": pl.Utf8}


def command_status(db: Database, principal: Principal, command_id: str, now: datetime,
                   settings: ViewerSettings) -> tuple[Command, CommandStatus]:
    rows = db.rows(f"SELECT command_id, home_id, device_id, state, {db.us('run_at')}, issued_by, "
                   f"{db.us('issued_at')} FROM device_commands WHERE command_id = :c",
                   {"c": command_id})
    if not rows:
        raise AccessDenied(f"No command {command_id!r}.")
    cid, home_id, device_id, state, run_at, by, at = rows[0]
    require_home(principal, home_id)
    command = Command(cid, home_id, device_id, CommandState(state), from_us(run_at), by, from_us(at))
    acks = db.frame(f"SELECT status, state, {db.us('ts')} AS ts, message FROM command_acks "
                    "WHERE command_id = :c ORDER BY ts", {"c": command_id}, ACK_SCHEMA)
    applied = acks.filter(pl.col("status") == "applied")
    after = None
    if applied.height:
        row = db.rows(f"SELECT {db.us('ts')}, power_w FROM readings WHERE home_id = :h "
                      "AND device_id = :d AND ts > :t ORDER BY ts DESC LIMIT 1",
                      {"h": home_id, "d": device_id, "t": applied["ts"][0]})
        after = (from_us(row[0][0]), float(row[0][1])) if row else None
    return command, assess(command, acks, after, now, settings.ack_timeout_s,
                           settings.off_threshold_w)


def assess(command: Command, acks: pl.DataFrame, reading_after: tuple[datetime, float] | None,
           now: datetime, timeout_s: float, off_threshold_w: float) -> CommandStatus:
    """What became of a command, from its acks and the device's newest reading after the switch."""
    device = command.device_id
    by_status = {row["status"]: row for row in acks.iter_rows(named=True)}
    if "rejected" in by_status:
        why = by_status["rejected"]["message"] or "no reason given"
        return CommandStatus("rejected", "error", f"{device} refused the command: {why}.", True)
    applied = by_status.get("applied")
    if applied is None:
        if "scheduled" in by_status and command.run_at is not None:
            overdue = (now - command.run_at).total_seconds() > timeout_s
            if overdue:
                return CommandStatus("timeout", "error",
                                     f"{device} accepted the schedule but has not confirmed switching "
                                     f"{command.state.value} at {command.run_at:%H:%M} UTC.", True)
            return CommandStatus("scheduled", "info",
                                 f"{device} will switch {command.state.value} at "
                                 f"{command.run_at:%Y-%m-%d %H:%M} UTC (acknowledged).", False)
        if (now - command.issued_at).total_seconds() > timeout_s:
            return CommandStatus("timeout", "error",
                                 f"No answer from {device} within {timeout_s:.0f} s: it may be offline. "
                                 "Nothing is known to have changed.", True)
        return CommandStatus("waiting", "info", f"Sent; waiting for {device} to answer…", False)
    state = applied["state"]
    if reading_after is None:
        if (now - applied["ts"]).total_seconds() > timeout_s:
            return CommandStatus("applied", "warning",
                                 f"{device} says it is {state}, but has sent no reading since.", True)
        return CommandStatus("applied", "info",
                             f"{device} says it is {state}; waiting for a reading to confirm…", False)
    ts, power = reading_after
    if state == CommandState.OFF.value and power > off_threshold_w:
        return CommandStatus("still_drawing", "warning",
                             f"{device} acknowledged OFF but still draws {power:,.0f} W "
                             f"(reading at {ts:%H:%M:%S} UTC). Check the device.", True)
    what = "off" if state == CommandState.OFF.value else "on"
    return CommandStatus("confirmed", "success",
                         f"{device} is {what}: {power:,.0f} W at {ts:%H:%M:%S} UTC.", True)


COMMANDS_SCHEMA: Schema = {"command_id": pl.Utf8, "device_id": pl.Utf8, "state": pl.Utf8, "run_at": TS,
                   "issued_by": pl.Utf8, "issued_at": TS, "answer": pl.Utf8, "answered_at": TS}


def recent_commands(db: Database, principal: Principal, home_id: str, limit: int = 20) -> pl.DataFrame:
    """The home's latest commands with who sent them and the device's last answer."""
    require_home(principal, home_id)
    return db.frame(
        f"SELECT c.command_id, c.device_id, c.state, {db.us('c.run_at')} AS run_at, c.issued_by, "
        f"{db.us('c.issued_at')} AS issued_at, "
        "(SELECT a.status FROM command_acks a WHERE a.command_id = c.command_id "
        " ORDER BY a.ts DESC LIMIT 1) AS answer, "
        f"(SELECT {db.us('max(a.ts)')} FROM command_acks a WHERE a.command_id = c.command_id) "
        "AS answered_at FROM device_commands c WHERE c.home_id = :h "
        "ORDER BY c.issued_at DESC LIMIT :n", {"h": home_id, "n": limit}, COMMANDS_SCHEMA)


def switched_off_but_drawing(devices: pl.DataFrame, db: Database, principal: Principal,
                             home_id: str, off_threshold_w: float) -> pl.DataFrame:
    """Devices whose last applied command was OFF and whose newest reading, taken after it, is
    above the threshold: a relay that did not open, or a device switched back on locally."""
    require_home(principal, home_id)
    last_applied = db.frame(
        f"SELECT a.device_id, a.state, {db.us('a.ts')} AS ts FROM command_acks a "
        "WHERE a.home_id = :h AND a.status = 'applied' AND a.ts = (SELECT max(b.ts) FROM "
        "command_acks b WHERE b.home_id = a.home_id AND b.device_id = a.device_id "
        "AND b.status = 'applied')", {"h": home_id},
        {"device_id": pl.Utf8, "state": pl.Utf8, "ts": TS})
    return (devices.join(last_applied, on="device_id", how="inner")
            .filter((pl.col("state") == "off") & (pl.col("last_seen") > pl.col("ts"))
                    & (pl.col("power_w") > off_threshold_w))
            .select("device_id", "power_w", pl.col("ts").alias("switched_off_at")))


