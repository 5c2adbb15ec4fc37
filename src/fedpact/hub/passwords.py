"""Password policy and the bounded pool that hashes passwords.

argon2 is slow and memory-hard on purpose (64 MiB per hash by default), so a burst of
logins or registrations could exhaust the hub's memory and threads. Every hash runs in
a pool of ``hash_slots`` slots; a request waits for a slot asynchronously (holding no
worker thread, so reads and polls go on) for at most ``hash_wait_s``, then gets 503
with Retry-After, which clients retry.

The policy uses zxcvbn, which ships its frequency lists (common passwords, names, words)
inside the package: nothing is downloaded and nothing leaves the hub.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TypeVar

import anyio
from fastapi import HTTPException
from zxcvbn import zxcvbn

MIN_LENGTH = 10
#: zxcvbn's score runs 0-4; 2 ("somewhat guessable", about 10^8 guesses) refuses common
#: passwords and their obvious variations while accepting passphrases.
MIN_SCORE = 2
#: zxcvbn's matching grows quickly with length; a longer password is judged on its start.
_JUDGED_CHARS = 64

T = TypeVar("T")


def password_problem(password: str, name: str, organisation: str = "") -> str | None:
    """Why ``password`` is refused, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"a password has at least {MIN_LENGTH} characters; got {len(password)}"
    if name and password.strip().lower() == name.lower():
        return "the password must not be the user name"
    inputs = [x for x in (name, organisation) if x]
    result = zxcvbn(password[:_JUDGED_CHARS], user_inputs=inputs)
    if result["score"] < MIN_SCORE:
        warning = result["feedback"].get("warning") or "it is too easy to guess"
        return f"this password is too common or guessable ({warning.rstrip('.')}); use a few uncommon words"
    return None


class HashPool:
    """At most ``slots`` password hashes at a time; waiting is bounded and holds no thread."""

    def __init__(self, slots: int, wait_s: float) -> None:
        self.slots = slots
        self.wait_s = wait_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.free: asyncio.Semaphore | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the semaphore on the loop that serves requests (called at startup)."""
        self.loop = loop
        self.free = asyncio.Semaphore(self.slots)
        self._limiter = anyio.CapacityLimiter(self.slots)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.free is None:
            self.bind(asyncio.get_running_loop())
        assert self.free is not None
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a permit that
            # was granted just as the time ran out, shrinking the pool for good.
            async with asyncio.timeout(self.wait_s):
                await self.free.acquire()
        except TimeoutError:
            raise HTTPException(
                503,
                "the hub is busy checking other passwords; retry in a few seconds",
                headers={"Retry-After": str(max(1, math.ceil(self.wait_s)))},
            ) from None
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        finally:
            self.free.release()
