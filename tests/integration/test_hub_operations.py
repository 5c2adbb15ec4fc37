"""What operators see: Prometheus metrics, health of each backend, JSON logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from fedpact.hub.server import HubProcess
from hub_fixtures import Api, fast_config
from services import RABBITMQ_URL, postgres_database
from support import wait_for


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_messages_rounds_and_bytes(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()["name"]
        bob.join(task)
        for _ in range(3):
            assert bob.send(task, f"participant/{bob.name}", "aggregator", kind="update").status_code == 201
        assert bob.send(task, "aggregator", "participants").status_code == 403
        r = alice.http.put(f"/tasks/{task}/rounds/1", json={
            "status": "complete", "participants": [bob.name], "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:01Z", "metrics": {},
        })
        assert r.status_code == 200, r.text
        m = _samples(hub.url)
        route = "/tasks/{task}/messages"
        assert m[("fedpact_http_requests_total", frozenset({("method", "POST"), ("route", route), ("status", "201")}))] == 3
        assert m[("fedpact_http_requests_total", frozenset({("method", "POST"), ("route", route), ("status", "403")}))] == 1
        assert m[("fedpact_messages_relayed_total", frozenset())] == 3
        assert m[("fedpact_rounds_recorded_total", frozenset({("status", "complete")}))] == 1
        assert m[("fedpact_http_received_bytes_total", frozenset({("route", route)}))] > 0
        assert m[("fedpact_http_request_seconds_count", frozenset({("method", "POST"), ("route", route)}))] == 4
        assert m[("fedpact_mailbox_polls_waiting", frozenset())] == 0
        # A raw path never becomes a label: unknown paths share one series.
        httpx.get(f"{hub.url}/no/such/{'x' * 50}")
        assert not any("x" * 50 in str(k) for k in _samples(hub.url))
        api.close()


def test_health_reports_postgresql_and_the_broker(tmp_path: Path) -> None:
    with postgres_database() as url, EmbeddedHub(
        config=fast_config(tmp_path / "hub", database_url=url, broker_url=RABBITMQ_URL)
    ) as hub:
        def healthy() -> dict[str, object] | None:
            body = httpx.get(f"{hub.url}/api/v1/health").json()
            return body if body["status"] == "ok" else None

        body = wait_for(healthy, 30, "the hub to connect to RabbitMQ")
        assert {k: (b["kind"], b["status"]) for k, b in body["backends"].items()} == {
            "database": ("postgresql", "ok"), "broker": ("rabbitmq", "ok"), "blob_store": ("local", "ok"),
        }


def test_health_says_degraded_and_why_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub", broker_url="amqp://guest:guest@127.0.0.1:1/")) as hub:
        body = httpx.get(f"{hub.url}/api/v1/health").json()
        assert body["status"] == "degraded"
        assert body["backends"]["broker"]["status"] == "down"
        assert "re-check the database" in body["backends"]["broker"]["detail"]


def test_json_logs_write_one_object_per_line(tmp_path: Path) -> None:
    with HubProcess(config=fast_config(tmp_path / "hub", json_logs=True)) as hub:
        httpx.get(f"{hub.url}/api/v1/health")
    lines = [line for line in hub.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and len(records) == len([line for line in lines if not line.startswith("fedpact hub on")])
    assert all({"time", "level", "logger", "message", "pid"} <= r.keys() for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert not any("\x1b" in json.dumps(r) or "\\u001b" in json.dumps(r) for r in records)


def test_metrics_answer_only_the_metrics_token_when_one_is_set(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub", metrics_token="scrape-secret-1")) as hub:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret-1"}):
            r = httpx.get(f"{hub.url}/metrics", headers=headers)
            assert r.status_code == 401
            assert "metrics token" in r.json()["detail"] and "fedpact_" not in r.text
        r = httpx.get(f"{hub.url}/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
        assert r.status_code == 200 and "fedpact_http_requests_total" in r.text
        # The refused scrapes were counted like any request: refusing changed nothing else.
        assert httpx.get(f"{hub.url}/api/v1/health").status_code == 200


def test_a_logout_on_one_replica_revokes_the_token_on_the_others_at_once(tmp_path: Path) -> None:
    """The replicas trust cached tokens for an hour here, so only the broker's message can revoke it in time."""
    with postgres_database() as url:
        hubs = [
            HubProcess(config=fast_config(tmp_path / f"r{i}", database_url=url, broker_url=RABBITMQ_URL,
                                          token_cache_s=3600))
            for i in (1, 2)
        ]
        for h in hubs:
            h.start()
        try:
            for h in hubs:
                wait_for(lambda h=h: httpx.get(f"{h.url}/api/v1/health").json()["status"] == "ok", 30,  # type: ignore[misc]
                         "the replica to connect to RabbitMQ")
            api_a = Api(hubs[0].url)
            alice = api_a.user("alice")
            auth = {"Authorization": f"Bearer {alice.token}"}
            assert httpx.get(f"{hubs[1].url}/api/v1/users/me", headers=auth).status_code == 200  # now cached on B
            assert httpx.post(f"{hubs[0].url}/api/v1/auth/logout", headers=auth).status_code == 204

            def refused_on_b() -> bool:
                return httpx.get(f"{hubs[1].url}/api/v1/users/me", headers=auth).status_code == 401

            wait_for(refused_on_b, 20, "replica B to refuse the revoked token")
            assert httpx.get(f"{hubs[0].url}/api/v1/users/me", headers=auth).status_code == 401
            api_a.close()
        finally:
            for h in hubs:
                h.stop()
