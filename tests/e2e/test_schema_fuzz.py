"""Schemathesis drives the control API from /openapi.json: no server error, every answer matches the schema.

A real LB with real replicas on loopback; a bounded number of examples per operation. The proxy's
catch-all operations are left out: they forward to the replicas, whose answers the LB does not define.
The schema is built at collection from create_app() (no LB runs yet; schemathesis's lazy fixture loader
needs a pytest-internal attribute that pytest 9 dropped); a test checks it equals the LB's /openapi.json.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.schemas import BaseSchema

from app.main import create_app
from app.settings import Settings
from tests.lb_support import RunningLB, start_lb, wait_until

pytestmark = pytest.mark.slow

EXAMPLES = 25  # per operation
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module", params=["open", "token"])
def fuzzed_lb(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningLB]:
    """Two replicas, at most four (random /add bodies stay cheap); without, then with an admin token."""
    token = "fuzz-token" if request.param == "token" else ""
    workdir = tmp_path_factory.mktemp("schema")
    running = start_lb(workdir, replicas="2", max_replicas="4", admin_token=token)
    yield running
    running.stop()


OPENAPI: dict[str, Any] = create_app(Settings(max_replicas=4)).openapi()
schema: BaseSchema = schemathesis.openapi.from_dict(OPENAPI).exclude(tag="proxy")


def keep_one_replica(lb: RunningLB) -> None:
    """A fuzzed DELETE /rm may empty the pool; then /route rightly answers 503, which is no finding."""
    if not lb.replicas():
        token = lb.env["LB_ADMIN_TOKEN"]
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        assert lb.client.post("/add", json={"n": 1}, headers=auth).status_code == 200
    wait_until(lambda: lb.client.get("/ring").json()["members"], timeout=30)


def test_the_fuzzed_schema_is_the_lbs_own(fuzzed_lb: RunningLB) -> None:
    assert fuzzed_lb.client.get("/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_control_api_conforms_to_its_schema(case: schemathesis.Case[Any], fuzzed_lb: RunningLB) -> None:
    assert fuzzed_lb.url.startswith("http://127.0.0.1:")  # loopback only
    keep_one_replica(fuzzed_lb)
    case.call_and_validate(base_url=fuzzed_lb.url, checks=CHECKS, timeout=30)
