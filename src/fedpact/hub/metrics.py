"""Prometheus metrics of one hub replica, served at ``/metrics``.

Each app has its own registry (tests run several hubs in one process); the numbers are
per replica, and Prometheus sums them across replicas. Routes are labelled by their
template (``/tasks/{task}/mailbox/{address:path}``, without the ``/api/v1`` prefix), never by the raw path, so the
number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fedpact_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "fedpact_http_request_seconds", "Time to answer a request (long-polls included)", ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )
        self.bytes_in = Counter("fedpact_http_received_bytes", "Request body bytes received", ["route"], registry=r)
        self.bytes_out = Counter("fedpact_http_sent_bytes", "Response body bytes sent", ["route"], registry=r)
        self.in_flight = Gauge("fedpact_http_requests_in_flight", "Requests being answered now", registry=r)
        self.waiting_polls = Gauge(
            "fedpact_mailbox_polls_waiting", "Mailbox long-polls waiting for a message (the wake-up queue)", registry=r
        )
        self.messages = Counter("fedpact_messages_relayed", "Messages accepted by the relay", registry=r)
        self.rounds = Counter("fedpact_rounds_recorded", "Round records written, by status", ["status"], registry=r)
        self.handed_on = Counter(
            "fedpact_lean_handed_on", "Polls and updates with a parameter in an unusual form, parsed by FastAPI",
            ["route"], registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by route template, status and size; times it."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        status = 500
        received = sent = 0
        start = time.perf_counter()

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            m.in_flight.dec()
            # The router leaves the matched route in the scope; its template is the label.
            route = str(getattr(scope.get("route"), "path", "other"))
            m.requests.labels(scope["method"], route, str(status)).inc()
            m.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
            m.bytes_in.labels(route).inc(received)
            m.bytes_out.labels(route).inc(sent)
