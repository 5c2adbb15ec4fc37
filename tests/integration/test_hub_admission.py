"""Admission over real HTTP: open, approval and invite tasks, the creator's decisions, removal.

Every refusal is checked to change nothing: the creator's view of the members, the
requests and the refused user's own standing are compared before and after.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_fixtures import Api, User, api, definition, hub, unique  # noqa: E402,F401


def members(creator: User, task: str) -> list[tuple[str, str]]:
    r = creator.http.get(f"/tasks/{task}/members")
    assert r.status_code == 200, r.text
    return [(m["user"], m["status"]) for m in r.json()["items"]]


def snapshot(creator: User, task: str) -> dict[str, Any]:
    t = creator.http.get(f"/tasks/{task}").json()
    return {"members": members(creator, task), "participants": t["participants"], "requests": t["requests"]}


def member_only_requests(name: str, user: User) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that only the creator and admitted members may use, as ``user`` would call it."""
    return [
        ("GET", f"/tasks/{name}/mailbox/participant/{user.name}", {}),
        ("GET", f"/tasks/{name}/mailbox/participants", {}),
        ("POST", f"/tasks/{name}/messages",
         {"json": {"sender": f"participant/{user.name}", "recipient": "aggregator", "kind": "hello"}}),
        ("POST", f"/tasks/{name}/uploads", {"json": {"sha256": "a" * 64, "size": 3}}),
        ("PUT", f"/tasks/{name}/blobs/{'b' * 64}",
         {"content": b"abc", "headers": {"content-type": "application/octet-stream"}}),
        ("GET", f"/tasks/{name}/blobs/{'c' * 64}", {}),
        ("GET", f"/tasks/{name}/rounds", {}),
        ("GET", f"/tasks/{name}/aggregator", {}),
        ("GET", f"/tasks/{name}/aggregator/log", {}),
    ]


def assert_shut_out(name: str, user: User, why: str) -> None:
    for method, path, kw in member_only_requests(name, user):
        r = user.http.request(method, path, **kw)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "only admitted members" in r.json()["detail"] and why in r.json()["detail"], (path, r.text)


def test_the_default_is_approval_and_a_request_grants_nothing(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    assert t["definition"]["admission"] == {"mode": "approval", "users": [], "organisations": []}
    r = bob.request(t["name"])
    assert r.status_code == 202 and r.json()["status"] == "PENDING" and r.json()["user"] == bob.name
    assert bob.request(t["name"]).status_code == 202  # asking again is harmless
    assert_shut_out(t["name"], bob, "is pending")
    seen = bob.http.get(f"/tasks/{t['name']}").json()
    assert seen["membership"] == "PENDING" and seen["requests"] == [] and seen["participants"] == []
    assert bob.http.get("/assignments").json()["items"] == []
    assert bob.http.get("/tasks", params={"joined": "true"}).json()["total"] == 0

    own = alice.http.get(f"/tasks/{t['name']}").json()
    assert own["requests"] == [bob.name] and own["participants"] == []
    pending = alice.http.get(f"/tasks/{t['name']}/requests").json()["items"]
    assert [(p["user"], p["organisation"], p["status"]) for p in pending] == [(bob.name, "ACME", "PENDING")]

    r = alice.http.post(f"/tasks/{t['name']}/requests/{bob.name}/approve")
    assert r.status_code == 200 and r.json()["status"] == "ADMITTED" and r.json()["decided_at"]
    assert alice.http.post(f"/tasks/{t['name']}/requests/{bob.name}/approve").json()["status"] == "ADMITTED"
    assert bob.request(t["name"]).status_code == 200
    assert bob.http.get(f"/tasks/{t['name']}/mailbox/participant/{bob.name}").status_code == 200
    assert bob.http.get(f"/tasks/{t['name']}/rounds").status_code == 200
    assert [x["name"] for x in bob.http.get("/assignments").json()["items"]] == [t["name"]]
    assert alice.http.get(f"/tasks/{t['name']}/requests").json()["items"] == []
    assert bob.http.get(f"/tasks/{t['name']}").json()["participants"] == [bob.name]


def test_only_the_creator_decides_and_refusals_change_nothing(api: Api) -> None:
    alice, bob, carol, mallory = api.user("alice"), api.user("bob"), api.user("carol"), api.user("mallory")
    t = alice.create_task()
    name = t["name"]
    bob.request(name)
    carol.join(name)
    before = snapshot(alice, name)
    for who in (bob, carol, mallory):
        for method, path in (
            ("GET", f"/tasks/{name}/requests"),
            ("GET", f"/tasks/{name}/members"),
            ("POST", f"/tasks/{name}/requests/{bob.name}/approve"),
            ("POST", f"/tasks/{name}/requests/{bob.name}/decline"),
            ("DELETE", f"/tasks/{name}/members/{carol.name}"),
        ):
            r = who.http.request(method, path)
            assert r.status_code == 403 and "only the creator" in r.json()["detail"], (who.name, path, r.text)
    cases = [
        ("POST", f"/tasks/{name}/requests/nobody-{unique('x')}/approve", 404, "no user"),
        ("POST", f"/tasks/{name}/requests/{mallory.name}/approve", 404, "has not asked to join"),
        ("DELETE", f"/tasks/{name}/members/{mallory.name}", 404, "has not asked to join"),
        ("POST", f"/tasks/{name}/requests/{carol.name}/decline", 409, "already admitted"),
        ("DELETE", f"/tasks/{name}/members/{bob.name}", 409, "decline the request"),
        ("POST", f"/tasks/no-such-task-{unique('t')}/requests/{bob.name}/approve", 404, "no task"),
    ]
    for method, path, status, hint in cases:
        r = alice.http.request(method, path)
        assert r.status_code == status and hint in r.json()["detail"], (path, r.text)
    assert snapshot(alice, name) == before
    assert bob.http.get(f"/tasks/{name}").json()["membership"] == "PENDING"


def test_declined_users_stay_out_until_approved(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    name = alice.create_task()["name"]
    bob.request(name)
    r = alice.http.post(f"/tasks/{name}/requests/{bob.name}/decline")
    assert r.status_code == 200 and r.json()["status"] == "DECLINED"
    before = snapshot(alice, name)
    r = bob.request(name)
    assert r.status_code == 403 and "declined your request" in r.json()["detail"]
    r = bob.http.post(f"/tasks/{name}/leave")
    assert r.status_code == 404
    assert snapshot(alice, name) == before == {"members": [(bob.name, "DECLINED")], "participants": [], "requests": []}
    assert_shut_out(name, bob, "declined your request")
    assert alice.http.post(f"/tasks/{name}/requests/{bob.name}/approve").json()["status"] == "ADMITTED"
    assert bob.http.get(f"/tasks/{name}/mailbox/participants").status_code == 200


def test_removed_members_lose_access_and_cannot_rejoin(api: Api) -> None:
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    name = alice.create_task(definition=definition(admission="open"))["name"]
    bob.join(name)
    carol.join(name)
    r = alice.http.delete(f"/tasks/{name}/members/{bob.name}")
    assert r.status_code == 200 and r.json()["status"] == "REMOVED"
    before = snapshot(alice, name)
    assert before["participants"] == [carol.name]
    assert_shut_out(name, bob, "removed you")
    r = bob.request(name)  # an open task does not let a removed member back in
    assert r.status_code == 403 and "removed you" in r.json()["detail"]
    r = alice.send(name, "aggregator", f"participant/{bob.name}")
    assert r.status_code == 404 and "removed" in r.json()["detail"]
    assert bob.http.get("/assignments").json()["items"] == []
    assert bob.http.get(f"/tasks/{name}").json()["participants"] == []
    assert snapshot(alice, name) == before
    assert carol.http.get(f"/tasks/{name}/mailbox/participants").status_code == 200
    assert alice.http.post(f"/tasks/{name}/requests/{bob.name}/approve").json()["status"] == "ADMITTED"
    assert bob.http.get(f"/tasks/{name}/mailbox/participants").status_code == 200


def test_open_tasks_admit_on_join(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    name = alice.create_task(definition=definition(admission={"mode": "open"}))["name"]
    r = bob.request(name)
    assert r.status_code == 200 and r.json()["status"] == "ADMITTED"
    assert alice.http.get(f"/tasks/{name}/requests").json()["items"] == []


def test_invite_admits_named_users_and_organisations_only(api: Api) -> None:
    org = unique("Hospital B")
    alice = api.user("alice")
    bob, carol, mallory = api.user("bob"), api.user("carol", organisation=org), api.user("mallory")
    admission = {"mode": "invite", "users": [bob.name], "organisations": [org]}
    name = alice.create_task(definition=definition(admission=admission))["name"]
    assert bob.request(name).json()["status"] == "ADMITTED"
    assert carol.request(name).json()["status"] == "ADMITTED"
    before = snapshot(alice, name)
    r = mallory.request(name)
    assert r.status_code == 403
    assert "invites" in r.json()["detail"] and mallory.name in r.json()["detail"] and "'ACME'" in r.json()["detail"]
    assert snapshot(alice, name) == before and before["participants"] == [bob.name, carol.name]
    assert mallory.http.get(f"/tasks/{name}").json()["membership"] is None
    assert alice.request(name).json()["status"] == "ADMITTED"  # the creator may always take part


def test_bad_admission_fields_are_422_and_create_nothing(api: Api) -> None:
    alice = api.user("alice")
    bad = [
        ("everyone", "is not a mode"),
        ({"mode": "invite"}, "needs at least one entry"),
        ({"mode": "approval", "users": ["bob-123"]}, "takes no invitation list"),
        ({"mode": "invite", "users": ["no spaces"]}, "are not user names"),
        ({"mode": "invite", "users": ["bob-123", "bob-123"]}, "must not repeat"),
        ({"mode": "invite", "users": ["bob-123"], "groups": ["x"]}, "groups"),
    ]
    for admission, hint in bad:
        name = unique("bad")
        r = alice.http.post("/tasks", json={"name": name, "definition": definition(admission=admission)})
        assert r.status_code == 422 and hint in r.text, (admission, r.text)
        assert alice.http.get(f"/tasks/{name}").status_code == 404


def test_a_finished_task_admits_nobody_new(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    name = alice.create_task()["name"]
    bob.request(name)
    alice.http.post(f"/tasks/{name}/cancel")
    r = alice.http.post(f"/tasks/{name}/requests/{bob.name}/approve")
    assert r.status_code == 409 and "CANCELLED" in r.json()["detail"]
    assert members(alice, name) == [(bob.name, "PENDING")]
