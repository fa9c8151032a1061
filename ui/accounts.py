"""Users, their homes, sessions, rate-limited sign-in and the audit log, all kept in the store.

Passwords are hashed with Argon2id (argon2-cffi's ``PasswordHasher`` and its RFC 9106 defaults);
a hash made with older parameters is replaced at the next successful sign-in. Everything lives in
the store rather than in the viewer process, so several viewer replicas share users, sessions,
sign-in limits and the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sinks.rows import from_us
from ui.auth import Principal, Role
from ui.db import Database, Transaction
from ui.settings import ViewerSettings

MIN_PASSWORD_LENGTH = 10
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_HASHER = PasswordHasher()
# Verified when the user name is unknown, so an attacker cannot tell names apart by timing.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
# Stands in for SHEMS_UI_SIGNIN_KEY when none is set (then replicas hash unknown names apart).
_PROCESS_KEY = secrets.token_hex(32)
# The client of a connection from this machine (Streamlit reports none for localhost), of AppTest
# and of the CLI.
LOCAL_CLIENT = "local"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SignInError(Exception):
    """A refused sign-in; the message is what the person sees."""

    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionExpired(Exception):
    pass


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    homes: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    token: str  # given to the browser session only; the store keeps its hash
    principal: Principal
    expires_at: datetime


def validate_username(username: str) -> str:
    if not _USERNAME.match(username or ""):
        raise ValueError("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
    return username


def validate_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, db: Database, settings: ViewerSettings | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.settings = settings or ViewerSettings()
        self.clock = clock

    # ------------------------------------------------------------------ user management
    def add_user(self, username: str, password: str, role: Role, homes: Iterable[str] = (),
                 *, by: str) -> None:
        validate_username(username)
        validate_password(password)
        role = Role(role)
        homes = sorted(set(homes))
        if role is Role.HOMEOWNER and not homes:
            raise ValueError("a homeowner needs at least one home (--home)")
        now = self.clock()
        with self.db.transaction() as tx:
            if tx.rows("SELECT 1 FROM users WHERE username = :u", {"u": username}):
                raise ValueError(f"user {username!r} already exists")
            tx.execute("INSERT INTO users (username, password_hash, role, created_at, "
                       "password_changed_at) VALUES (:u, :h, :r, :now, :now)",
                       {"u": username, "h": _HASHER.hash(password), "r": role.value, "now": now})
            self._write_homes(tx, username, homes)
            self._audit(tx, by, "user_add", detail=f"{username} as {role.value}"
                        + (f" of {', '.join(homes)}" if homes else ""))

    def remove_user(self, username: str, *, by: str) -> bool:
        with self.db.transaction() as tx:
            found = tx.execute("DELETE FROM users WHERE username = :u", {"u": username}) == 1
            tx.execute("DELETE FROM user_homes WHERE username = :u", {"u": username})
            tx.execute("DELETE FROM sessions WHERE username = :u", {"u": username})
            if found:
                self._audit(tx, by, "user_remove", detail=username)
        return found

    def set_password(self, username: str, password: str, *, by: str) -> bool:
        """Also ends the user's sessions: a password change locks out whoever knew the old one."""
        validate_password(password)
        with self.db.transaction() as tx:
            found = tx.execute(
                "UPDATE users SET password_hash = :h, password_changed_at = :now WHERE username = :u",
                {"u": username, "h": _HASHER.hash(password), "now": self.clock()}) == 1
            if found:
                tx.execute("DELETE FROM sessions WHERE username = :u", {"u": username})
                self._audit(tx, by, "user_passwd", detail=username)
        return found

    def set_access(self, username: str, role: Role, homes: Iterable[str], *, by: str) -> bool:
        role, homes = Role(role), sorted(set(homes))
        if role is Role.HOMEOWNER and not homes:
            raise ValueError("a homeowner needs at least one home")
        with self.db.transaction() as tx:
            found = tx.execute("UPDATE users SET role = :r WHERE username = :u",
                               {"u": username, "r": role.value}) == 1
            if found:
                self._write_homes(tx, username, homes)
                self._audit(tx, by, "user_access", detail=f"{username}: {role.value}"
                            + (f" of {', '.join(homes)}" if homes else ""))
        return found

    @staticmethod
    def _write_homes(tx: Transaction, username: str, homes: list[str]) -> None:
        tx.execute("DELETE FROM user_homes WHERE username = :u", {"u": username})
        for home in homes:
            tx.execute("INSERT INTO user_homes (username, home_id) VALUES (:u, :h)",
                       {"u": username, "h": home})

    def users(self) -> list[User]:
        rows = self.db.rows(
            f"SELECT u.username, u.role, {self.db.us('u.created_at')}, h.home_id FROM users u "
            "LEFT JOIN user_homes h ON h.username = u.username ORDER BY u.username, h.home_id")
        out: dict[str, User] = {}
        for username, role, created, home in rows:
            user = out.get(username) or User(username, Role(role), (), from_us(created))
            out[username] = User(user.username, user.role,
                                 user.homes + ((home,) if home else ()), user.created_at)
        return list(out.values())

    def principal(self, username: str) -> Principal | None:
        rows = self.db.rows("SELECT u.role, h.home_id FROM users u LEFT JOIN user_homes h "
                            "ON h.username = u.username WHERE u.username = :u", {"u": username})
        if not rows:
            return None
        return Principal(username, Role(rows[0][0]), frozenset(h for _, h in rows if h))

    # ------------------------------------------------------------------ sign-in
    def sign_in(self, username: str, password: str, client: str | None = None) -> Session:
        """A new session, or SignInError with a sentence for the person. Wrong name and wrong
        password read the same. Guessing is slowed per client address and per user name (see
        ``_throttled_for``); a throttled try is refused before the password is checked and is
        not counted, so waiting is all it takes."""
        now = self.clock()
        typed = (username or "")[:64]
        client = client or LOCAL_CLIENT
        with self.db.transaction() as tx:
            if self.db.dialect == "postgres":  # serialise tries per address and per name
                tx.execute("SELECT pg_advisory_xact_lock(1, hashtext(:c))", {"c": client})
                tx.execute("SELECT pg_advisory_xact_lock(2, hashtext(:u))", {"u": typed})
            row = tx.rows("SELECT password_hash FROM users WHERE username = :u", {"u": typed})
            # A name nobody has may be a password typed in the wrong field: keep only its keyed
            # hash, which still lets the per-name limit and the audit log count it.
            key = typed if row else self._unknown_name(typed)
            wait = self._throttled_for(tx, key, client, now)
            if wait is not None:
                seconds = max(1, math.ceil(wait.total_seconds()))
                raise SignInError("Too many failed sign-ins. Try again in "
                                  + (f"{seconds} second{'s' if seconds > 1 else ''}." if seconds < 120
                                     else f"{math.ceil(seconds / 60)} minutes."), wait)
            ok = False
            try:
                ok = _HASHER.verify(row[0][0] if row else _DUMMY_HASH, password or "") and bool(row)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                ok = False
            tx.execute("INSERT INTO signin_attempts (username, at, ok, client) "
                       "VALUES (:u, :at, :ok, :client)",
                       {"u": key, "at": now, "ok": ok, "client": client})
            if not ok:
                self._audit(tx, key, "signin_failed", detail=client)
                self._forget_old_attempts(tx, now)
            else:
                if _HASHER.check_needs_rehash(row[0][0]):
                    tx.execute("UPDATE users SET password_hash = :h WHERE username = :u",
                               {"u": key, "h": _HASHER.hash(password)})
                token = secrets.token_urlsafe(32)
                expires = now + self.settings.session_max
                tx.execute("INSERT INTO sessions (token_hash, username, created_at, last_seen, "
                           "expires_at) VALUES (:t, :u, :now, :now, :exp)",
                           {"t": _token_hash(token), "u": key, "now": now, "exp": expires})
                tx.execute("DELETE FROM sessions WHERE expires_at < :now", {"now": now})
                self._audit(tx, key, "signin", detail=client)
        if not ok:
            # Committed above: the failure counts even though we raise.
            raise SignInError("Wrong user name or password.")
        principal = self.principal(key)
        assert principal is not None
        return Session(token, principal, expires)

    def _unknown_name(self, typed: str) -> str:
        key = (self.settings.signin_key or _PROCESS_KEY).encode()
        return "?" + hmac.new(key, typed.encode(), hashlib.sha256).hexdigest()[:32]

    def _throttled_for(self, tx: Transaction, key: str, client: str,
                       now: datetime) -> timedelta | None:
        """How long this try must wait, or None.

        Per client address: failures within the window, whatever the names, beyond the free ones
        double the wait after that address's last failure (a spray of names from one address
        slows down as fast as guesses at one name). A success does not reset it: an attacker
        with an account of their own could otherwise clear their counter.

        Per user name: failures from every address since the name's last success, beyond its own
        free count, double a wait capped short (a botnet guessing one password gets one try per
        cap). An address this user signed in from recently is exempt, so the real user is never
        kept out by someone else's failures; a new address waits at most the cap."""
        s = self.settings
        window_start = now - timedelta(seconds=s.signin_window_s)
        waits = []
        client_failures = [from_us(t) for (t,) in tx.rows(
            f"SELECT {self.db.us('at')} FROM signin_attempts WHERE client = :c AND ok = :f "
            "AND at >= :w ORDER BY at DESC", {"c": client, "f": False, "w": window_start})]
        waits.append(_backoff(client_failures, s.signin_client_free_failures,
                              s.signin_client_max_delay_s, now, s.signin_first_delay_s))
        last_ok = tx.rows(f"SELECT {self.db.us('max(at)')} FROM signin_attempts "
                          "WHERE username = :u AND ok = :t", {"u": key, "t": True})[0][0]
        known = tx.rows("SELECT 1 FROM signin_attempts WHERE username = :u AND client = :c "
                        "AND ok = :t AND at >= :since LIMIT 1",
                        {"u": key, "c": client, "t": True,
                         "since": now - timedelta(days=s.signin_known_client_days)})
        if not known:
            since = window_start if last_ok is None else max(window_start, from_us(last_ok))
            name_failures = [from_us(t) for (t,) in tx.rows(
                f"SELECT {self.db.us('at')} FROM signin_attempts WHERE username = :u "
                "AND ok = :f AND at > :since ORDER BY at DESC",
                {"u": key, "f": False, "since": since})]
            waits.append(_backoff(name_failures, s.signin_name_free_failures,
                                  s.signin_name_max_delay_s, now, s.signin_first_delay_s))
        known_waits = [w for w in waits if w is not None]
        return max(known_waits) if known_waits else None

    def _forget_old_attempts(self, tx: Transaction, now: datetime) -> None:
        """Failures matter only within the window, successes while they make an address known:
        older rows go, which also keeps the per-address query (no index on client) small."""
        s = self.settings
        tx.execute("DELETE FROM signin_attempts WHERE (ok = :f AND at < :failed) "
                   "OR (ok = :t AND at < :succeeded)",
                   {"f": False, "t": True, "failed": now - timedelta(seconds=s.signin_window_s),
                    "succeeded": now - timedelta(days=s.signin_known_client_days)})

    def resume(self, token: str, *, touch: bool = True) -> Principal:
        """The session's user; SessionExpired when it is unknown, idle too long, or too old.
        ``touch`` counts this as activity (page runs do; the live page's auto-refresh does not)."""
        now = self.clock()
        rows = self.db.rows(f"SELECT username, {self.db.us('last_seen')}, {self.db.us('expires_at')} "
                            "FROM sessions WHERE token_hash = :t", {"t": _token_hash(token)})
        if not rows:
            raise SessionExpired("Your session has ended. Please sign in again.")
        username, last_seen, expires_at = rows[0]
        if now >= from_us(expires_at) or now - from_us(last_seen) >= self.settings.session_idle:
            self.db.execute("DELETE FROM sessions WHERE token_hash = :t", {"t": _token_hash(token)})
            raise SessionExpired("Your session expired. Please sign in again.")
        principal = self.principal(username)
        if principal is None:
            raise SessionExpired("Your account no longer exists.")
        if touch:
            self.db.execute("UPDATE sessions SET last_seen = :now WHERE token_hash = :t",
                            {"now": now, "t": _token_hash(token)})
        return principal

    def sign_out(self, token: str, username: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE token_hash = :t", {"t": _token_hash(token)})
            self._audit(tx, username, "signout")

    # ------------------------------------------------------------------ audit log
    def audit(self, username: str, action: str, home_id: str | None = None,
              device_id: str | None = None, detail: str = "") -> None:
        with self.db.transaction() as tx:
            self._audit(tx, username, action, home_id, device_id, detail)

    def _audit(self, tx: Transaction, username: str, action: str, home_id: str | None = None,
               device_id: str | None = None, detail: str = "") -> None:
        tx.execute("INSERT INTO audit_log (at, username, action, home_id, device_id, detail) "
                   "VALUES (:at, :u, :a, :h, :d, :detail)",
                   {"at": self.clock(), "u": username, "a": action, "h": home_id, "d": device_id,
                    "detail": detail})


def _backoff(failures: list[datetime], free: int, cap_s: float,
             now: datetime, first_s: float = 1.0) -> timedelta | None:
    """The wait left after the newest of ``failures`` (newest first): none for the first
    ``free``, then ``first_s`` (1 s), twice that, four times ... up to ``cap_s``."""
    extra = len(failures) - free
    if extra < 0 or not failures:
        return None
    delay = timedelta(seconds=min(cap_s, first_s * 2.0 ** min(extra, 30)))
    left = failures[0] + delay - now
    return left if left > timedelta(0) else None


