"""The in-process notifier: prompt wake-ups, no lost notifications, safe from other threads."""

from __future__ import annotations

import asyncio
import threading
import time

from fedpact.hub.notify import AsyncioNotifier


def test_wait_times_out_without_notification() -> None:
    async def main() -> bool:
        return await AsyncioNotifier().wait(1, 0.2)

    assert asyncio.run(main()) is False


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

    assert asyncio.run(main()) is True


def test_a_notification_between_mark_and_wait_is_not_lost() -> None:
    # A zero timeout: only the counter already past the mark can answer True.
    async def main() -> bool:
        n = AsyncioNotifier()
        n.bind(asyncio.get_running_loop())
        mark = n.mark(3)
        n.notify(3)
        await asyncio.sleep(0.01)
        return await n.wait(3, 0.0, since=mark)

    assert asyncio.run(main()) is True


def test_notifications_are_per_task() -> None:
    async def main() -> bool:
        n = AsyncioNotifier()
        n.bind(asyncio.get_running_loop())
        asyncio.get_running_loop().call_later(0.05, n.notify, 2)
        return await n.wait(1, 0.3)

    assert asyncio.run(main()) is False


def test_notify_without_a_loop_is_harmless() -> None:
    AsyncioNotifier().notify(1)
