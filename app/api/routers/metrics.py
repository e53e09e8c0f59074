"""GET /metrics in the Prometheus text format, read from the pool at scrape time.

A custom collector instead of counters on the data path: the proxy does no extra work per request.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.api.deps import PoolDep
from app.control.lifecycle import State
from app.control.membership import Membership

router = APIRouter(tags=["status"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PoolCollector(Collector):
    """Replica membership, health and restarts of one pool."""

    def __init__(self, pool: Membership) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        members = self.pool.replicas()
        desired = GaugeMetricFamily("chlb_replicas_desired", "Replicas the LB keeps alive")
        desired.add_metric([], len(self.pool.names()))
        up = GaugeMetricFamily("chlb_replica_up", "1 when the replica is on the ring", labels=["replica"])
        fails = GaugeMetricFamily(
            "chlb_replica_consecutive_failures", "Failed heartbeats in a row", labels=["replica"]
        )
        restarts = CounterMetricFamily(
            "chlb_replica_restarts", "Replacements of the replica", labels=["replica"]
        )
        for m in members:
            up.add_metric([m.name], 1.0 if m.state is State.UP else 0.0)
            fails.add_metric([m.name], m.fails)
            restarts.add_metric([m.name], m.restarts)
        in_flight = GaugeMetricFamily(
            "chlb_replica_in_flight",
            "Proxied requests sent to the replica and not finished (this process's data plane)",
            labels=["replica"],
        )
        for name, upstream in self.pool.table.upstreams.items():
            in_flight.add_metric([name], upstream.in_flight)
        yield from (desired, up, fails, restarts, in_flight)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(pool: PoolDep) -> Response:
    """Prometheus metrics: desired replicas, per-replica up, consecutive failures, restarts, in flight."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pool))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
