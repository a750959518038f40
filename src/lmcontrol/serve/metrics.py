"""Prometheus metrics of one server (``GET /metrics``), in a registry of its own so apps never collide.

Exported (``lmcontrol_`` prefix): ``requests_total{endpoint,status}``, ``request_latency_seconds{endpoint}``
and ``time_to_first_token_seconds`` histograms, ``prompt_tokens_total`` / ``generated_tokens_total``,
``tokens_per_second`` (completion tokens over the last ``window`` seconds), and gauges read from the engine at
scrape time: ``queue_depth``, ``batch_size`` (rows running), ``loaded_controls`` and every numeric field of
``engine.stats()`` as ``engine_<field>``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """Counters the app updates per request, gauges read from ``stats()`` when scraped."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, stats: Callable[[], dict[str, Any]], loaded: Callable[[], int], window: float = 10.0):
        self.registry = CollectorRegistry()
        self.window = window
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        r = self.registry
        self.requests = Counter("lmcontrol_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("lmcontrol_request_latency_seconds", "Request latency (arrival to last byte)",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("lmcontrol_time_to_first_token_seconds", "Arrival to the first generated token",
                              buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("lmcontrol_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.generated = Counter("lmcontrol_generated_tokens", "Completion tokens of finished requests", registry=r)

        def stat(key: str) -> Callable[[], float]:
            return lambda: float(stats().get(key, 0) or 0)

        for name, key, doc in (
            ("lmcontrol_queue_depth", "queue_depth", "Requests waiting for a row in the batch"),
            ("lmcontrol_batch_size", "running", "Rows in the running batch"),
        ):
            Gauge(name, doc, registry=r).set_function(stat(key))
        r.register(_EngineStats(stats))
        Gauge("lmcontrol_loaded_controls", "Loaded controls (served as MODEL:NAME)", registry=r).set_function(
            lambda: float(loaded())
        )
        Gauge("lmcontrol_tokens_per_second", "Completion tokens per second over the last window",
              registry=r).set_function(self.tokens_per_second)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.generated.inc(completion_tokens)
        with self._lock:
            self._recent.append((time.monotonic(), completion_tokens))

    def tokens_per_second(self) -> float:
        cutoff = time.monotonic() - self.window
        with self._lock:
            while self._recent and self._recent[0][0] < cutoff:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / self.window

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineStats(Collector):
    """Every numeric field of ``engine.stats()`` as ``lmcontrol_engine_<field>`` (counters of steps, tokens,
    finishes by reason, ...), read at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self) -> Any:
        for key, value in sorted(self.stats().items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                name = "lmcontrol_engine_" + "".join(ch if ch.isalnum() else "_" for ch in str(key))
                yield GaugeMetricFamily(name, f"engine.stats()['{key}']", value=float(value))
