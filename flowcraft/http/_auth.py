"""Who is calling: ``Principal``, ``BearerAuth``, and the permissions routes need."""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from starlette.requests import Request

__all__ = ["READ", "START", "CANCEL", "Auth", "BearerAuth", "Permission", "Principal", "identify"]

Permission: TypeAlias = Literal["execution:read", "execution:start", "execution:cancel"]
READ: Permission = "execution:read"
START: Permission = "execution:start"
CANCEL: Permission = "execution:cancel"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name (recorded as ``by``) and its permissions."""

    name: str
    permissions: frozenset[str] = field(default_factory=frozenset)

    def __repr__(self) -> str:
        return f"flowcraft.http.Principal({self.name!r}, {sorted(self.permissions)!r})"

    def may(self, permission: str) -> bool:
        """Whether the principal holds ``permission``."""
        return permission in self.permissions


#: ``auth=`` of ``create_app``: a callable from the request to a principal (sync or async).
Auth: TypeAlias = Callable[[Request], "Principal | Awaitable[Principal | None] | None"]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class BearerAuth:
    """``Authorization: Bearer <token>`` against a table of tokens and their permissions.

    ``BearerAuth({"s3cret": {"execution:read", "execution:cancel"}})``. A value may also be a
    ``Principal`` to name the caller; otherwise the principal is named ``token-<8 hex>`` (a
    prefix of the token's SHA-256, never the token). Tokens are compared in constant time:
    every entry is compared (as SHA-256 digests, so lengths leak nothing) on every request.
    """

    def __init__(self, tokens: Mapping[str, Iterable[str] | Principal]) -> None:
        self._table: list[tuple[bytes, Principal]] = []
        for token, value in tokens.items():
            if not token:
                raise ValueError("BearerAuth: an empty token would let anyone in")
            digest = _digest(token)
            if isinstance(value, Principal):
                principal = value
            else:
                principal = Principal(f"token-{digest.hex()[:8]}", frozenset(value))
            self._table.append((digest, principal))

    def __repr__(self) -> str:
        return f"flowcraft.http.BearerAuth({len(self._table)} tokens)"

    def __call__(self, request: Request) -> Principal | None:
        """The principal the request's bearer token names, or None."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = _digest(token.strip())
        found: Principal | None = None
        for digest, principal in self._table:
            if hmac.compare_digest(given, digest):  # no early exit: constant work per request
                found = principal
        return found


async def identify(auth: Auth, request: Request) -> Principal | None:
    """Call ``auth`` (sync or async) for a request."""
    got = auth(request)
    if inspect.isawaitable(got):
        got = await got
    if got is not None and not isinstance(got, Principal):
        raise TypeError(f"auth returned {type(got).__name__}; return a Principal or None")
    return got
