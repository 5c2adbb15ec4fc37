"""Registration and sessions.

Password hashing is deliberately slow, so it always runs outside a database transaction
(on SQLite a transaction holds the write lock and would stall every other request) and
in the bounded :class:`~fedpact.hub.passwords.HashPool`. The routes are async so that a
request waiting for a hashing slot holds no worker thread: a burst of logins then
cannot starve reads and polls. Failed logins and registrations are throttled per user
name and per client address (see :mod:`fedpact.hub.throttle`).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from fedpact.hub.auth import (
    CurrentUser,
    State,
    new_token,
    token_expiry,
    verify_password,
)
from fedpact.hub.errors import AUTH_ERRORS, error_responses
from fedpact.hub.schemas import LoginIn, LoginOut, UserCreate, UserOut
from fedpact.hub.state import HubState
from fedpact.hub.tables import Token, User
from fedpact.hub.throttle import too_many
from fedpact.hub.views import user_out

router = APIRouter(tags=["users"])

WRONG_LOGIN = "wrong user name or password"


def _taken(name: str) -> HTTPException:
    return HTTPException(409, f"the user name {name!r} is taken: choose another one, or log in if it is yours")


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check_registrations(state: HubState, address: str) -> None:
    c = state.config
    wait = state.throttle.retry_after(f"register:{address}", c.registrations_per_address)
    if wait is not None:
        raise too_many(
            "registrations from your address", "registrations_per_address", c.registrations_per_address,
            c.throttle_window_s, wait,
        )  # fmt: skip


def _check_logins(state: HubState, name: str, address: str) -> None:
    c = state.config
    wait = state.throttle.retry_after(f"login-name:{name}", c.login_failures_per_name)
    if wait is not None:
        raise too_many(
            f"failed logins as {name!r}", "login_failures_per_name", c.login_failures_per_name,
            c.throttle_window_s, wait,
        )  # fmt: skip
    wait = state.throttle.retry_after(f"login-address:{address}", c.login_failures_per_address)
    if wait is not None:
        raise too_many(
            "failed logins from your address", "login_failures_per_address", c.login_failures_per_address,
            c.throttle_window_s, wait,
        )  # fmt: skip


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    responses=error_responses(400, 409, 413, 422, 429, 503),
)
async def register(body: UserCreate, request: Request, state: State) -> UserOut:
    address = _address(request)
    _check_registrations(state, address)

    def name_taken() -> bool:
        with state.db.reading() as s:
            return s.scalars(select(User.id).where(User.name == body.name)).first() is not None

    if await run_in_threadpool(name_taken):
        raise _taken(body.name)
    password_hash = await state.hash_pool.run(state.hasher.hash, body.password)

    def insert() -> UserOut:
        with state.db.session() as s:
            user = User(name=body.name, organisation=body.organisation, password_hash=password_hash)
            s.add(user)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise _taken(body.name) from None
            return user_out(user)

    out = await run_in_threadpool(insert)
    state.throttle.add(f"register:{address}")
    return out


@router.post("/auth/login", response_model=LoginOut, responses=error_responses(400, 401, 413, 422, 429, 503))
async def login(body: LoginIn, request: Request, state: State) -> LoginOut:
    address = _address(request)
    _check_logins(state, body.name, address)

    def find() -> User | None:
        with state.db.reading() as s:
            row = s.scalars(select(User).where(User.name == body.name)).first()
            if row is not None:
                s.expunge(row)  # keep its loaded columns past the read session's rollback
            return row

    user = await run_in_threadpool(find)
    stored = user.password_hash if user else None
    if not await state.hash_pool.run(verify_password, state.hasher, stored, body.password):
        state.throttle.add(f"login-name:{body.name}")
        state.throttle.add(f"login-address:{address}")
        raise HTTPException(401, WRONG_LOGIN, headers={"WWW-Authenticate": "Bearer"})
    assert user is not None
    state.throttle.clear(f"login-name:{body.name}")
    rehash = None
    if state.hasher.check_needs_rehash(user.password_hash):
        rehash = await state.hash_pool.run(state.hasher.hash, body.password)
    token, digest = new_token()
    expires_at = token_expiry(state.config)
    user_id = user.id

    def issue() -> None:
        with state.db.session() as s:
            s.add(Token(user_id=user_id, token_hash=digest, expires_at=expires_at))
            if rehash is not None:
                fresh = s.get(User, user_id)
                if fresh is not None:
                    fresh.password_hash = rehash
            s.commit()

    await run_in_threadpool(issue)
    return LoginOut(token=token, user=user_out(user), expires_at=expires_at)


@router.post("/auth/logout", status_code=204, responses=error_responses(*AUTH_ERRORS))
def logout(user: CurrentUser, state: State) -> Response:
    with state.db.session() as s:
        s.execute(delete(Token).where(Token.id == user.token_id))
        s.commit()
    state.tokens.forget(user.digest)
    state.notifier.revoked(user.digest)
    return Response(status_code=204)


@router.get("/users/me", response_model=UserOut, responses=error_responses(*AUTH_ERRORS))
def me(user: CurrentUser, state: State) -> UserOut:
    with state.db.session() as s:
        row = s.get(User, user.id)
        if row is None:
            raise HTTPException(401, "this user no longer exists: register again")
        return user_out(row)
