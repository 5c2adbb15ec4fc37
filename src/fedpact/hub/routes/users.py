"""Registration and sessions.

Password hashing is deliberately slow, so it always runs outside a database transaction:
on SQLite a transaction holds the write lock and would stall every other request.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from fedpact.hub.auth import (
    CurrentUser,
    State,
    new_token,
    token_expiry,
    verify_password,
)
from fedpact.hub.schemas import LoginIn, LoginOut, UserCreate, UserOut
from fedpact.hub.tables import Token, User
from fedpact.hub.views import user_out

router = APIRouter(tags=["users"])

WRONG_LOGIN = "wrong user name or password"


def _taken(name: str) -> HTTPException:
    return HTTPException(409, f"the user name {name!r} is taken: choose another one, or log in if it is yours")


@router.post("/users", status_code=201, response_model=UserOut)
def register(body: UserCreate, state: State) -> UserOut:
    with state.db.session() as s:
        exists = s.scalars(select(User.id).where(User.name == body.name)).first() is not None
    if exists:
        raise _taken(body.name)
    password_hash = state.hasher.hash(body.password)
    with state.db.session() as s:
        user = User(name=body.name, organisation=body.organisation, password_hash=password_hash)
        s.add(user)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            raise _taken(body.name) from None
        return user_out(user)


@router.post("/auth/login", response_model=LoginOut)
def login(body: LoginIn, state: State) -> LoginOut:
    with state.db.session() as s:
        user = s.scalars(select(User).where(User.name == body.name)).first()
    if not verify_password(state.hasher, user.password_hash if user else None, body.password):
        raise HTTPException(401, WRONG_LOGIN, headers={"WWW-Authenticate": "Bearer"})
    assert user is not None
    rehash = state.hasher.hash(body.password) if state.hasher.check_needs_rehash(user.password_hash) else None
    token, digest = new_token()
    expires_at = token_expiry(state.config)
    with state.db.session() as s:
        s.add(Token(user_id=user.id, token_hash=digest, expires_at=expires_at))
        if rehash is not None:
            fresh = s.get(User, user.id)
            if fresh is not None:
                fresh.password_hash = rehash
        s.commit()
    return LoginOut(token=token, user=user_out(user), expires_at=expires_at)


@router.post("/auth/logout", status_code=204)
def logout(user: CurrentUser, state: State) -> Response:
    with state.db.session() as s:
        s.execute(delete(Token).where(Token.id == user.token_id))
        s.commit()
    state.tokens.forget(user.digest)
    return Response(status_code=204)


@router.get("/users/me", response_model=UserOut)
def me(user: CurrentUser, state: State) -> UserOut:
    with state.db.session() as s:
        row = s.get(User, user.id)
        if row is None:
            raise HTTPException(401, "this user no longer exists: register again")
        return user_out(row)
