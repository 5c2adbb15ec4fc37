"""Schemathesis against a live hub: no input reaches a 500, and every answer matches the
OpenAPI document (status code declared, body of the declared schema).

A short run (a bounded number of examples per operation) is part of the suite; ``make fuzz``
runs the same test with many more (``FEDPACT_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from hub_fixtures import Api, fast_config

EXAMPLES = int(os.environ.get("FEDPACT_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_fuzzed_requests_get_no_500_and_match_the_openapi_document(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub", login_failures_per_address=0)) as h:
        api = Api(h.url)
        alice, bob = api.user("alice"), api.user("bob")
        bob.join(alice.create_task("fuzzed-task")["name"])
        spec = httpx.get(f"{h.url}/api/v1/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        seen: dict[int, int] = {}
        headers = {"Authorization": f"Bearer {alice.token}"}
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.label == "POST /api/v1/auth/logout":
                continue  # it would revoke the token every other operation uses
            operations += 1


            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            @given(case=operation.as_strategy())
            def run(case: Any) -> None:
                response = case.call_and_validate(base_url=h.url, headers=headers, checks=CHECKS)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1

            run()
        api.close()
    print("status codes seen:", dict(sorted(seen.items())))
    assert operations > 30
    # The token stayed valid, so the run reached the routes' own checks, not only the 401.
    assert seen.get(401, 0) < sum(seen.values()) / 2, seen
    assert not any(code >= 500 for code in seen), seen
