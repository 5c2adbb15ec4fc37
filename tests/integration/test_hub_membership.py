"""Joining, leaving and assignments over real HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_fixtures import Api, api, hub  # noqa: E402,F401


def test_join_is_idempotent_and_listed(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    first = bob.join(t["name"])
    assert first["task"] == t["name"] and first["task_id"] == t["id"] and first["user"] == bob.name
    again = bob.join(str(t["id"]))
    assert again == first
    assert alice.http.get(f"/tasks/{t['name']}").json()["participants"] == [bob.name]
    alice.join(t["name"])
    assert alice.http.get(f"/tasks/{t['name']}").json()["participants"] == [bob.name, alice.name]


def test_join_unknown_task_is_404(api: Api) -> None:
    bob = api.user("bob")
    r = bob.http.post("/tasks/no-such-task-anywhere/join")
    assert r.status_code == 404 and "no task" in r.json()["detail"]
    assert bob.http.get("/assignments").json()["items"] == []
    assert bob.http.get("/tasks", params={"joined": "true"}).json()["total"] == 0


def test_join_finished_task_is_409(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    alice.http.post(f"/tasks/{t['name']}/cancel")
    r = bob.http.post(f"/tasks/{t['name']}/join")
    assert r.status_code == 409 and "CANCELLED" in r.json()["detail"]
    assert alice.http.get(f"/tasks/{t['name']}").json()["participants"] == []


def test_leave(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    r = bob.http.post(f"/tasks/{t['name']}/leave")
    assert r.status_code == 404 and "not a participant" in r.json()["detail"]
    bob.join(t["name"])
    assert bob.http.post(f"/tasks/{t['name']}/leave").status_code == 204
    assert alice.http.get(f"/tasks/{t['name']}").json()["participants"] == []
    assert bob.http.post("/tasks/no-such-task-anywhere/leave").status_code == 404


def test_assignments_are_joined_unfinished_tasks(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    created, running, done, other = (alice.create_task() for _ in range(4))
    for t in (created, running, done):
        bob.join(t["name"])
    alice.http.post(f"/tasks/{running['name']}/status", json={"status": "RUNNING"})
    alice.http.post(f"/tasks/{done['name']}/cancel")
    items = bob.http.get("/assignments").json()["items"]
    assert [(t["name"], t["status"]) for t in items] == [(created["name"], "CREATED"), (running["name"], "RUNNING")]
    assert alice.http.get("/assignments").json()["items"] == []
