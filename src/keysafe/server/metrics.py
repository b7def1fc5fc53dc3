"""Prometheus metrics. Labels are route templates and status codes only: never a
secret name, org or path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from keysafe.server.deps import ServerState


class Metrics:
    def __init__(self, state_ref: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("keysafe_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("keysafe_http_request_seconds", "HTTP request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25,
                                          .5, 1, 2.5))
        self.registry.register(_ManagerCollector(state_ref))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(method, route, str(status)),
                    self.latency.labels(route))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)


class _ManagerCollector:
    def __init__(self, state_ref: Any) -> None:
        self._state_ref = state_ref

    def collect(self) -> Iterator[Any]:
        st = self._state_ref()
        if st is None:
            return
        stats = st.manager.stats()
        for key in ("cache_hits", "cache_misses", "stale_served", "audit_failures"):
            c = CounterMetricFamily(f"keysafe_{key}", f"manager {key.replace('_', ' ')}")
            c.add_metric([], stats[key])
            yield c
        g = GaugeMetricFamily("keysafe_cache_entries", "values in the server cache")
        g.add_metric([], stats["cache_entries"])
        yield g
        checks = CounterMetricFamily("keysafe_key_checks", "live key checks by verdict",
                                     labels=["outcome"])
        for outcome in ("valid", "rejected", "unknown", "unsupported", "off", "rate_limited"):
            checks.add_metric([outcome], stats.get(f"key_checks_{outcome}", 0))
        yield checks
        yield from _rotation_metrics(getattr(st.scheduler, "rotation", None))
        access = getattr(st.scheduler, "access", None)
        if access is not None:
            from keysafe.manager.access import KINDS

            c = CounterMetricFamily("keysafe_access_findings", "findings of the scheduled "
                                    "access reports this process ran, by kind",
                                    labels=["kind"])
            for kind in KINDS:
                if kind != "unread":  # not asked on a schedule
                    c.add_metric([kind], access.found.get(kind, 0))
            yield c


def _rotation_metrics(engine: Any) -> Iterator[Any]:
    """Rotation outcomes and events by kind (labels carry no names or orgs)."""
    if engine is None:
        return
    c = CounterMetricFamily("keysafe_rotations", "rotation outcomes", labels=["outcome"])
    for outcome in ("rotated", "failed", "reminders", "retired", "resumed"):
        c.add_metric([outcome], getattr(engine.stats, outcome))
    yield c
    g = GaugeMetricFamily("keysafe_secrets_overdue", "secrets past their rotation date "
                          "(at the last scheduled check)")
    g.add_metric([], engine.overdue)
    yield g
    if engine.events is not None:
        e = CounterMetricFamily("keysafe_events", "rotation events and reminders sent",
                                labels=["type"])
        for kind, n in sorted(engine.events.counts.items()):
            e.add_metric([kind], n)
        yield e
        f = CounterMetricFamily("keysafe_event_delivery_failures",
                                "webhook deliveries that failed")
        f.add_metric([], engine.events.failed)
        yield f


def render(state: ServerState) -> tuple[bytes, str]:
    return generate_latest(state.metrics.registry), CONTENT_TYPE_LATEST
