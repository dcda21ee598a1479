"""Prometheus metrics of one app, in its own registry (so several apps in one process do not collide)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self, max_batch: int = 8):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("blend_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("blend_request_seconds", "time to answer a request", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("blend_decode_batch_size", "rows the model took together, by kind of work "
                                    "(image, text, encode_image, encode_text)", ["kind"],
                                    buckets=tuple(range(1, max(2, max_batch) + 1)), registry=r)
        self.model_seconds = Counter("blend_model_seconds", "time the model worker spent on batches, by kind "
                                     "(its rate is the worker's utilisation)", ["kind"], registry=r)
        self.queue_depth = Gauge("blend_decode_queue_depth", "rows waiting for the model", registry=r)
        self.cache = Counter("blend_cache_lookups", "embedding cache lookups", ["result"], registry=r)
        self.retries = Counter("blend_replica_retries", "model calls sent again after a replica was lost",
                               registry=r)

    def cache_lookup(self, hit: bool) -> None:
        self.cache.labels("hit" if hit else "miss").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
