"""Wake-ups between hub replicas over RabbitMQ (aio-pika).

Every replica binds its own exclusive queue to one fanout exchange. A replica that commits
a message wakes its own waiters at once and publishes the task id; every other replica
consumes it and wakes its waiters for that task (the publisher drops its own copy). The database stays the record of truth:
a wake-up only tells a waiting poll to query again, so a lost or duplicated wake-up costs
latency, never a message. The same exchange carries token revocations (a logout), so
every replica forgets a revoked token at once instead of when its token cache expires.
While the broker is unreachable (or before the first connection succeeds)
:attr:`trusted` is False and waiting polls fall back to re-checking the database
every ``recheck_interval_s``; on every disconnect and reconnect all local waiters are woken
once, because wake-ups published meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from typing import Any

from fedpact.hub.notify import AsyncioNotifier

log = logging.getLogger("fedpact.hub.broker")

EXCHANGE = "fedpact.wakeups"
RETRY_S = 2.0
REVOKE = "revoke"
TOKEN_DIGEST = re.compile(r"[0-9a-f]{64}")


class BrokerNotifier(AsyncioNotifier):
    """An :class:`AsyncioNotifier` whose wake-ups also travel to and from the other replicas."""

    def __init__(self, url: str, reconnect_s: float = 1.0) -> None:
        super().__init__()
        self.url = url
        self.reconnect_s = reconnect_s
        self.name = f"fedpact-hub {socket.gethostname()} pid {os.getpid()} {id(self):x}"
        #: Wake-ups received from other replicas through the broker.
        self.received = 0
        self.published = 0
        #: This replica's own wake-ups coming back from the fanout, dropped: it woke its own
        #: readers before it published (a second wake would send each waiting reader of
        #: the message back to the database for nothing).
        self.echoes = 0
        #: Times the connection was lost after it had been up.
        self.disconnects = 0
        self._up = False
        self._connection: Any = None
        self._exchange: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def trusted(self) -> bool:
        return self._up

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        super().bind(loop)
        if self._runner is None:
            self._runner = loop.create_task(self._connect_forever())

    async def _connect_forever(self) -> None:
        import aio_pika

        while not self._stopping:
            try:
                connection = await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": self.name}, reconnect_interval=self.reconnect_s
                )
            except Exception as e:  # noqa: BLE001 - any failure to connect means: retry later
                log.warning("broker %s unreachable (%s); polls re-check the database meanwhile", _safe(self.url), e)
                await asyncio.sleep(RETRY_S)
                continue
            connection.close_callbacks.add(self._on_disconnect)
            connection.reconnect_callbacks.add(self._on_reconnect)
            # No publisher confirms: a wake-up is a hint (the database has the message), so
            # waiting for the broker's ack of each one would only cost a frame per message.
            channel = await connection.channel(publisher_confirms=False)
            exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=False)
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await queue.bind(exchange)
            await queue.consume(self._on_message, no_ack=True)
            self._connection, self._exchange = connection, exchange
            self._up = True
            log.info("broker %s connected; wake-ups travel between replicas", _safe(self.url))
            self._fire_all()
            return

    async def _on_message(self, message: Any) -> None:
        """A wake-up is ``b"<task id>"`` or ``b"<task id> <recipient>"``; ``b"revoke <digest>"`` revokes a token."""
        if message.app_id == self.name:
            self.echoes += 1
            return
        task, _, recipient = message.body.decode("utf-8", "replace").partition(" ")
        if task == REVOKE:
            if TOKEN_DIGEST.fullmatch(recipient):
                self.on_revoke(recipient)
            else:
                log.warning("ignored a token revocation without a token digest: %r", message.body[:80])
            return
        if not task.isdigit():
            log.warning("ignored a wake-up that does not start with a task id: %r", message.body[:40])
            return
        self.received += 1
        self._fire(int(task), recipient or None)

    def _on_disconnect(self, *_args: Any) -> None:
        if self._up:
            self.disconnects += 1
        self._up = False
        log.warning("broker connection lost; polls re-check the database until it is back")
        self._fire_all()

    def _on_reconnect(self, *_args: Any) -> None:
        log.info("broker connection restored")
        self._up = True
        self._fire_all()

    def notify(self, task_id: int, recipient: str | None = None) -> None:
        super().notify(task_id, recipient)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._publish_soon, task_id, recipient)
        except RuntimeError:
            pass  # the loop is shutting down

    def revoked(self, digest: str) -> None:
        """Publish the revocation; a replica that misses it (broker down) drops the token within its cache's TTL."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._send_soon, f"{REVOKE} {digest}")
        except RuntimeError:
            pass  # the loop is shutting down

    def _publish_soon(self, task_id: int, recipient: str | None) -> None:
        self._send_soon(f"{task_id} {recipient}" if recipient else str(task_id))

    def _send_soon(self, body: str) -> None:
        if self.trusted:
            asyncio.ensure_future(self._publish(body))

    async def _publish(self, body: str) -> None:
        import aio_pika

        try:
            await self._exchange.publish(aio_pika.Message(body=body.encode(), app_id=self.name), routing_key="")
            self.published += 1
        except Exception as e:  # noqa: BLE001 - a lost wake-up only delays; the database has the message
            log.warning("could not publish %r to the other replicas (%s)", body.split(" ")[0], e)

    async def close(self) -> None:
        self._stopping = True
        self._up = False
        if self._runner is not None:
            self._runner.cancel()
        if self._connection is not None:
            await self._connection.close()


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url
