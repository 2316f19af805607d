"""Bearer tokens and roles: who may do what on the API.

A token is ``tf_<id>_<secret>``; the store keeps its id, role and the SHA-256 of the whole
token (tokens are long random strings, so a fast hash is the right one, as for GitHub's), never
the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from twinfleet.errors import Forbidden, InvalidRequest, Unauthorized
from twinfleet.runtime.stores import StateStore

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "Forbidden",
    "Principal",
    "Role",
    "TokenStore",
    "Unauthorized",
]

Role = Literal["admin", "operator", "developer", "data-scientist", "viewer"]
ROLES: Final = ("admin", "operator", "developer", "data-scientist", "viewer")

# permission -> roles that have it (documented in docs/api.md)
PERMISSIONS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "twins:read": frozenset(ROLES),
        "events:read": frozenset(ROLES),
        "twins:write": frozenset(("admin", "operator", "developer")),
        "commands:send": frozenset(("admin", "operator", "developer")),
        "devices:manage": frozenset(("admin", "operator")),
        "models:manage": frozenset(("admin", "data-scientist")),
        "alarms:ack": frozenset(("admin", "operator")),
        "alarms:manage": frozenset(("admin", "operator")),
        "tokens:manage": frozenset(("admin",)),
    }
)

_KIND = "tokens"
_CACHE_S = 10.0  # a revoked token stops working within this long on other API processes


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, role and name."""

    token_id: str
    role: str
    name: str

    def require(self, permission: str) -> None:
        """Raise :class:`Forbidden` unless this role has ``permission``."""
        if self.role not in PERMISSIONS[permission]:
            raise Forbidden(
                f"role {self.role!r} may not {permission.replace(':', ' ')}", field="token"
            )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens kept hashed in the state store."""

    def __init__(self, store: StateStore, *, clock: Any = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    def create(self, role: str, *, name: str = "") -> tuple[dict[str, Any], str]:
        """A new token: its record (without secret) and the token to hand out once."""
        if role not in ROLES:
            raise InvalidRequest(f"role {role!r} is not one of {', '.join(ROLES)}", field="role")
        token_id = secrets.token_hex(6)
        token = f"tf_{token_id}_{secrets.token_urlsafe(32)}"
        record = {
            "id": token_id,
            "role": role,
            "name": name,
            "created": time.time(),
            "sha256": _digest(token),
        }
        self._store.put_item(_KIND, token_id, record)
        return _public(record), token

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified lately, without asking the store (or None)."""
        cached = self._cache.get(token)
        if cached is not None and self._clock() - cached[0] < _CACHE_S:
            return cached[1]
        return None

    def verify(self, token: str) -> Principal:
        """The principal of a bearer token, or :class:`Unauthorized`."""
        now = self._clock()
        known = self.cached(token)
        if known is not None:
            return known
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "tf":
            raise Unauthorized("the bearer token is malformed", field="authorization")
        record = self._store.get_item(_KIND, parts[1])
        if record is None or not hmac.compare_digest(record["sha256"], _digest(token)):
            raise Unauthorized("the bearer token is not valid", field="authorization")
        principal = Principal(record["id"], record["role"], record.get("name", ""))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now, principal)
        return principal

    def list(self) -> list[dict[str, Any]]:
        """Every token's record, without hashes."""
        return [_public(r) for r in self._store.list_items(_KIND)]

    def revoke(self, token_id: str) -> bool:
        """Delete a token; returns whether it existed."""
        self._cache = {t: c for t, c in self._cache.items() if c[1].token_id != token_id}
        return self._store.delete_item(_KIND, token_id)


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "sha256"}
