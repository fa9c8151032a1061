"""Who may see and do what. Every data function of the viewer calls one of the ``require_*``
checks before it reads or writes anything, so hiding a widget is never the only guard: a
homeowner who edits the URL to another home's id gets ``AccessDenied`` from the data layer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(str, Enum):
    HOMEOWNER = "homeowner"  # their own homes: view, switch devices, decide recommendations
    OPERATOR = "operator"  # the whole fleet: view every home, the fleet page, switch devices
    ADMIN = "admin"  # what an operator may, plus managing users


class AccessDenied(Exception):
    """The signed-in user may not see or do this; the message is safe to show them."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user, as loaded from the store on every page run (so a revoked home or a
    removed user takes effect at once)."""

    username: str
    role: Role
    homes: frozenset[str]  # a homeowner's own homes; operators and admins see every home

    @property
    def sees_fleet(self) -> bool:
        return self.role in (Role.OPERATOR, Role.ADMIN)

    def can_view(self, home_id: str) -> bool:
        return self.sees_fleet or home_id in self.homes

    def owns(self, home_id: str) -> bool:
        return home_id in self.homes


def require_home(principal: Principal, home_id: str) -> str:
    """The home id if the principal may see it; raises AccessDenied otherwise."""
    if not isinstance(home_id, str) or not home_id or not principal.can_view(home_id):
        # Same sentence whether the home exists or not: no probing for other homes' ids.
        raise AccessDenied(f"You do not have access to home {home_id!r}.")
    return home_id


def require_owner(principal: Principal, home_id: str) -> str:
    """Decisions that belong to the household (accepting a recommendation)."""
    require_home(principal, home_id)
    if not principal.owns(home_id):
        raise AccessDenied(f"Only the household of {home_id!r} can decide this.")
    return home_id


def require_fleet(principal: Principal) -> None:
    if not principal.sees_fleet:
        raise AccessDenied("The fleet view is for operators.")


def require_admin(principal: Principal) -> None:
    if principal.role is not Role.ADMIN:
        raise AccessDenied("Managing users is for administrators.")
