"""The in-process notifier: prompt wake-ups, no lost notifications, safe from other threads."""

from __future__ import annotations

import asyncio
import threading
import time

from fedpact.hub.notify import AsyncioNotifier
from support import run_coroutine


def test_wait_times_out_without_notification() -> None:
    async def main() -> bool:
        return await AsyncioNotifier().wait(1, 0.2)

    assert run_coroutine(main()) is False


def test_notify_from_a_worker_thread_wakes_the_waiter() -> None:
    # True only comes from a notification: the wait's own timeout returns False.
    async def main() -> bool:
        n = AsyncioNotifier()
        n.bind(asyncio.get_running_loop())

        def worker() -> None:
            time.sleep(0.1)
            n.notify(7)

        threading.Thread(target=worker).start()
        return await n.wait(7, 30.0)

    assert run_coroutine(main()) is True


def test_a_notification_between_mark_and_wait_is_not_lost() -> None:
    # A zero timeout: only the counter already past the mark can answer True.
    async def main() -> bool:
        n = AsyncioNotifier()
        n.bind(asyncio.get_running_loop())
        mark = n.mark(3)
        n.notify(3)
        await asyncio.sleep(0.01)
        return await n.wait(3, 0.0, since=mark)

    assert run_coroutine(main()) is True


def test_notifications_are_per_task() -> None:
    async def main() -> bool:
        n = AsyncioNotifier()
        n.bind(asyncio.get_running_loop())
        asyncio.get_running_loop().call_later(0.05, n.notify, 2)
        return await n.wait(1, 0.3)

    assert run_coroutine(main()) is False


def test_notify_without_a_loop_is_harmless() -> None:
    AsyncioNotifier().notify(1)


def test_a_notification_wakes_only_the_mailboxes_it_concerns() -> None:
    """A participant's update wakes the aggregator, not the other participants; a broadcast the reverse."""

    async def main() -> dict[str, bool]:
        n = AsyncioNotifier()
        n.bind(asyncio.get_running_loop())
        readers = ["aggregator", "participant/bob", "participant/carol", None]

        async def round_of(recipient: str | None) -> dict[str, bool]:
            waits = {str(a): asyncio.ensure_future(n.wait(5, 0.3, address=a)) for a in readers}
            await asyncio.sleep(0.01)
            n.notify(5, recipient)
            return {a: await w for a, w in waits.items()}

        return {
            "update": await round_of("aggregator"),
            "broadcast": await round_of("participants"),
            "direct": await round_of("participant/bob"),
            "status": await round_of(None),
        }

    got = run_coroutine(main())
    assert got["update"] == {"aggregator": True, "participant/bob": False, "participant/carol": False, "None": True}
    assert got["broadcast"] == {"aggregator": False, "participant/bob": True, "participant/carol": True, "None": True}
    assert got["direct"] == {"aggregator": False, "participant/bob": True, "participant/carol": False, "None": True}
    assert got["status"] == {"aggregator": True, "participant/bob": True, "participant/carol": True, "None": True}
