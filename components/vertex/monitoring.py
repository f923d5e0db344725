"""Cloud Monitoring client set-up and the one reader of an endpoint's serving metrics.

The official ``google-cloud-monitoring`` client speaks gRPC only (it ships no REST
transport), so on the local stack it is pointed at ``TUNE2SERVE_MONITORING_API_ENDPOINT``
(``tune2serve local env`` prints it, beside the Vertex endpoint) with anonymous
credentials and the stack's CA (``REQUESTS_CA_BUNDLE``) as the channel's roots; in the
cloud, Application Default Credentials and ``monitoring.googleapis.com``. Reading needs
``roles/monitoring.viewer`` on the project (docs/OPERATIONS.md).

What is read (the metrics Vertex AI publishes on ``aiplatform.googleapis.com/Endpoint``):
``prediction/online/response_count`` by ``deployed_model_id`` and ``response_code``, and
``prediction/online/prediction_latencies`` (``latency_type`` "total", a distribution).
Raw points (no aggregation: the API's alignment period is at least 60 s, longer than a
short bake), kept only when the point's interval lies inside the window asked for, so
the requests of the probe just before a bake are not counted in it. Cloud points cover
60 s and arrive up to a few minutes late: a bake in the cloud should be ≥ 10 minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune2serve.components.vertex.clients import VertexTarget, credentials

MONITORING_API_ENDPOINT_ENV = "TUNE2SERVE_MONITORING_API_ENDPOINT"
RESPONSE_COUNT = "aiplatform.googleapis.com/prediction/online/response_count"
PREDICTION_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"


def metric_client(vertex: VertexTarget) -> Any:
    """A ``monitoring_v3.MetricServiceClient`` for the target's stack."""
    from google.cloud import monitoring_v3

    if not vertex.is_local:
        return monitoring_v3.MetricServiceClient(credentials=credentials(vertex))
    from tune2serve.components.errors import UsageError

    host = os.environ.get(MONITORING_API_ENDPOINT_ENV)
    if not host:
        raise UsageError(f"{MONITORING_API_ENDPOINT_ENV} is not set: on the local stack, run "
                         "`eval \"$(tune2serve local env)\"` (a stack made before it served metrics needs "
                         "`tune2serve local down` then `up`)")
    import grpc
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcTransport,
    )

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    roots = Path(bundle).read_bytes() if bundle else None
    transport = MetricServiceGrpcTransport(host=host, credentials=credentials(vertex),
                                           ssl_channel_credentials=grpc.ssl_channel_credentials(roots))
    return monitoring_v3.MetricServiceClient(transport=transport)


@dataclass(frozen=True)
class CountPoint:
    start: float
    end: float
    code: str
    count: int


@dataclass(frozen=True)
class LatencyPoint:
    """One distribution point: its bucket upper bounds (ms; the last is +inf) and counts."""

    start: float
    end: float
    count: int
    mean_ms: float
    bounds: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass
class ModelSeries:
    """What Cloud Monitoring says about one deployed model over a window."""

    counts: list[CountPoint] = field(default_factory=list)
    latencies: list[LatencyPoint] = field(default_factory=list)


def bucket_bounds(options: Any, n: int) -> tuple[float, ...]:
    """Upper bounds of the first ``n`` buckets of a ``BucketOptions`` (inf for overflow)."""
    kind = options.WhichOneof("options")  # google.api.Distribution is a plain protobuf message
    if kind == "explicit_buckets":
        finite = list(options.explicit_buckets.bounds)
    elif kind == "exponential_buckets":
        e = options.exponential_buckets
        finite = [e.scale * e.growth_factor ** i for i in range(e.num_finite_buckets + 1)]
    elif kind == "linear_buckets":
        lin = options.linear_buckets
        finite = [lin.offset + lin.width * i for i in range(lin.num_finite_buckets + 1)]
    else:
        finite = []
    return tuple((finite + [float("inf")] * n)[:n]) if n else ()


def _seconds(ts: Any) -> float:
    return float(ts.timestamp())


def read_endpoint_series(client: Any, project: str, endpoint_id: str, start: float, end: float,
                         resource_name: str | None = None) -> dict[str, ModelSeries]:
    """Deployed model id → its response counts and latency distributions whose points
    lie in [start, end] (Unix seconds), read with ``list_time_series``.

    Raises:
        VertexError: Cloud Monitoring refused the call (403: the caller lacks
            roles/monitoring.viewer).
    """
    from google.api_core import exceptions as gexc
    from google.cloud import monitoring_v3
    from tune2serve.components.vertex.errors import translate_api_error

    interval = monitoring_v3.TimeInterval(start_time={"seconds": int(start), "nanos": int(start % 1 * 1e9)},
                                          end_time={"seconds": int(end) + 1})
    scope = f'resource.type = "{ENDPOINT_RESOURCE}" AND resource.labels.endpoint_id = "{endpoint_id}"'
    out: dict[str, ModelSeries] = {}
    try:
        for metric, extra in ((RESPONSE_COUNT, ""), (PREDICTION_LATENCIES, ' AND metric.labels.latency_type = "total"')):
            pages = client.list_time_series(request={
                "name": f"projects/{project}", "filter": f'metric.type = "{metric}" AND {scope}{extra}',
                "interval": interval, "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL})
            for series in pages:
                dm = series.metric.labels.get("deployed_model_id", "")
                entry = out.setdefault(dm, ModelSeries())
                for p in series.points:
                    p_start, p_end = _seconds(p.interval.start_time), _seconds(p.interval.end_time)
                    if p_start < int(start * 1000) / 1000 or p_end > end + 1e-3:
                        continue  # partly outside the window: the probe's requests, or not over yet
                    if metric == RESPONSE_COUNT:
                        entry.counts.append(CountPoint(p_start, p_end, series.metric.labels.get("response_code", ""),
                                                       int(p.value.int64_value)))
                    else:
                        d = p.value.distribution_value
                        counts = tuple(int(c) for c in d.bucket_counts)
                        entry.latencies.append(LatencyPoint(p_start, p_end, int(d.count), float(d.mean),
                                                            bucket_bounds(d.bucket_options, len(counts)), counts))
    except gexc.GoogleAPICallError as e:
        raise translate_api_error(e, resource_name=resource_name or f"Cloud Monitoring for endpoint {endpoint_id}") from e
    for entry in out.values():
        entry.counts.sort(key=lambda c: c.start)
        entry.latencies.sort(key=lambda p: p.start)
    return out
