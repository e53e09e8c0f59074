"""GET /metrics in the Prometheus text format, read from the membership and request counters at scrape time.

Custom collectors instead of prometheus-client metrics on the data path: per request the proxy only bumps
plain integers on app.metrics.Stats. With LB_WORKERS > 1, the counters are every process's, added up.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.api.deps import HubDep, MembershipDep, StatsDep
from app.api.routers.status import in_flight as in_flight_of
from app.control.lifecycle import State
from app.control.membership import Membership
from app.metrics import LATENCY_BOUNDS, STATUS_CLASSES, Stats, WorkerStats

if TYPE_CHECKING:
    from app.dataplane.hub import WorkerHub  # typing only: the API does not import the data plane

router = APIRouter(tags=["status"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LE = [f"{bound:g}" for bound in LATENCY_BOUNDS] + ["+Inf"]


class MembershipCollector(Collector):
    """Replica membership, health and restarts of the LB."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    def collect(self) -> Iterator[Metric]:
        members = self.membership.replicas()
        desired = GaugeMetricFamily("chlb_replicas_desired", "Replicas the LB keeps alive")
        desired.add_metric([], len(self.membership.names()))
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
        yield from (desired, up, fails, restarts)


class RequestCollector(Collector):
    """Per-replica requests, errors, retries, latency and in-flight; the LB's own answers; rebuilds."""

    def __init__(self, stats: Stats, membership: Membership, workers: WorkerStats | None = None) -> None:
        self.stats = stats
        self.membership = membership
        self.workers = workers  # LB_WORKERS > 1: their requests in flight, as last reported

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        requests = CounterMetricFamily(
            "chlb_requests",
            "Requests proxied to the replica, by answer class ('error': no answer: refused, reset, timeout)",
            labels=["replica", "class"],
        )
        retries = CounterMetricFamily(
            "chlb_upstream_retries",
            "Requests re-sent to the next replica after this one failed",
            labels=["replica"],
        )
        diverted = CounterMetricFamily(
            "chlb_balance_diverted",
            "Requests for this replica's keys sent to another replica by bounded loads",
            labels=["replica"],
        )
        latency = HistogramMetricFamily(
            "chlb_upstream_latency_seconds",
            "Time from sending a request to the replica to its complete answer",
            labels=["replica"],
        )
        for name, rs in sorted(stats.replicas.items()):
            for label, count in zip(STATUS_CLASSES, rs.by_class[1:6], strict=True):
                requests.add_metric([name, label], count)
            requests.add_metric([name, "error"], rs.errors)
            retries.add_metric([name], rs.retries)
            diverted.add_metric([name], rs.diverted)
            latency.add_metric(
                [name], buckets=list(zip(_LE, accumulate(rs.buckets), strict=True)), sum_value=rs.latency_sum
            )
        in_flight = GaugeMetricFamily(
            "chlb_in_flight", "Requests sent to the replica and not yet answered", labels=["replica"]
        )
        for member in self.membership.replicas():  # draining ones too: their requests are still in flight
            in_flight.add_metric([member.name], in_flight_of(member, self.workers))
        answers = CounterMetricFamily(
            "chlb_lb_responses", "Error answers the LB made itself (not a replica's)", labels=["code"]
        )
        for code, count in sorted(stats.lb_responses.items()):
            answers.add_metric([str(code)], count)
        rebuilds = CounterMetricFamily("chlb_ring_rebuilds", "Routing tables swapped in")
        rebuilds.add_metric([], stats.ring_rebuilds)
        transitions = CounterMetricFamily(
            "chlb_health_transitions",
            "Replica state changes, by the state entered",
            labels=["replica", "state"],
        )
        for (name, state), count in sorted(stats.transitions.items()):
            transitions.add_metric([name, state], count)
        clients = CounterMetricFamily(
            "chlb_client_requests", "Requests from clients, by protocol (TLS or not)", labels=["protocol"]
        )
        clients.add_metric(["http/1.1"], stats.http1_requests)
        clients.add_metric(["h2"], stats.h2_requests)
        handshakes = CounterMetricFamily(
            "chlb_tls_handshake_failures", "TLS handshakes that failed or timed out"
        )
        handshakes.add_metric([], stats.tls_handshake_failures)
        yield from (requests, retries, diverted, latency, in_flight, answers, rebuilds, transitions)
        yield from (clients, handshakes)


class WorkerCollector(Collector):
    """Restarts of the data-plane worker processes (LB_WORKERS > 1)."""

    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "chlb_worker_restarts", "Restarts of a data-plane worker whose process died", labels=["worker"]
        )
        for worker in self.hub.workers:
            restarts.add_metric([str(worker.index)], worker.restarts)
        yield restarts


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(membership: MembershipDep, stats: StatsDep, hub: HubDep) -> Response:
    """Prometheus metrics: health; per replica requests, retries, latency, in-flight; LB errors; rebuilds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MembershipCollector(membership))
    registry.register(RequestCollector(stats, membership, hub.stats if hub is not None else None))
    if hub is not None:
        registry.register(WorkerCollector(hub))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
