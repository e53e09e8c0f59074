"""A key source other than the default, through the real LB."""

from __future__ import annotations

from tests.lb_support import LBFactory


def test_header_key_source_through_the_lb(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="3", key_source="header", key_name="X-User")

    def served(user: str) -> str:
        body = lb.client.get("/home", headers={"X-User": user}).json()
        return str(body["message"]).split(":")[-1].strip()

    assert len({served("alice") for _ in range(10)}) == 1
    assert len({served(f"user{k}") for k in range(60)}) == 3
