"""Passwords, bearer tokens and the ``current_user`` dependency.

Passwords are argon2id hashes; tokens are random and stored only as sha256 digests, so
neither a database dump nor a backup lets anyone log in. ``current_user`` returns a plain
:class:`Principal`, not an ORM object, so async handlers can use it without a session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from fedpact.hub.config import HubConfig
from fedpact.hub.state import HubState, get_state
from fedpact.hub.tables import Token, User

_BEARER_HINT = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    organisation: str
    token_id: int
    digest: str = ""


def make_hasher(config: HubConfig) -> PasswordHasher:
    return PasswordHasher(
        time_cost=config.password_time_cost,
        memory_cost=config.password_memory_kib,
        parallelism=config.password_parallelism,
    )


def verify_password(hasher: PasswordHasher, stored_hash: str | None, password: str) -> bool:
    """Check a password; an unknown user still costs one hash so timing reveals nothing."""
    if stored_hash is None:
        hasher.hash(password)
        return False
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and the digest to store for it."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def token_expiry(config: HubConfig) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=config.token_ttl_s)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=_BEARER_HINT)


async def current_user(request: Request) -> Principal:
    """The caller, from the token cache on the event loop; the database (in the thread pool) only on a miss.

    Async because FastAPI runs a plain ``def`` dependency in the thread pool: one thread hop
    per request for what is, for a token seen in the last seconds, a dictionary look-up.
    The hub's state comes from the app, not from a dependency of its own: FastAPI solves
    every dependency on every request, and this one runs on all of them.
    """
    state: HubState = request.app.state.hub
    header = request.headers.get("authorization")
    if not header:
        raise unauthorized(
            "not logged in: send 'Authorization: Bearer <token>' with a token from POST /api/v1/auth/login"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized(
            "the Authorization header must be 'Bearer <token>'; get a token from POST /api/v1/auth/login"
        )
    digest = hash_token(token.strip())
    now = datetime.now(UTC)
    cached = state.tokens.get(digest, now)
    if cached is not None:
        return cached
    return await run_in_threadpool(_verify_token, state, digest, now)


def _verify_token(state: HubState, digest: str, now: datetime) -> Principal:
    with state.db.reading() as s:
        row = s.execute(
            select(Token.id, Token.expires_at, User.id, User.name, User.organisation)
            .join(User, User.id == Token.user_id)
            .where(Token.token_hash == digest)
        ).first()
    if row is None:
        raise unauthorized("invalid or revoked token: log in again with POST /api/v1/auth/login")
    token_id, expires_at, user_id, name, organisation = row
    if expires_at <= now:
        with state.db.session() as s:
            s.execute(delete(Token).where(Token.id == token_id))
            s.commit()
        raise unauthorized("the token has expired: log in again with POST /api/v1/auth/login")
    principal = Principal(id=user_id, name=name, organisation=organisation, token_id=token_id, digest=digest)
    state.tokens.put(digest, principal, expires_at)
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
State = Annotated[HubState, Depends(get_state)]
