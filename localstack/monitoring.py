"""Cloud Monitoring for the local stack: the endpoint metrics Vertex AI publishes, from
the requests the data plane really served, read through ``projects.timeSeries.list``.

Metrics (names, kinds and labels as in Google's list of ``aiplatform`` metrics):

    aiplatform.googleapis.com/prediction/online/response_count        DELTA INT64 "1"
        metric labels: deployed_model_id, response_code ("200", "503"...),
                       model_display_name, endpoint_display_name
    aiplatform.googleapis.com/prediction/online/prediction_latencies  DELTA DISTRIBUTION "ms"
        metric labels: deployed_model_id, latency_type ("total"),
                       model_display_name, endpoint_display_name
    monitored resource: aiplatform.googleapis.com/Endpoint
        resource labels: resource_container (the project), location, endpoint_id

One point per series per ``SAMPLE_PERIOD_S`` (Vertex samples every 60 s; here 1 s, so a
bake of a few seconds has points), kept ``RETENTION_S``; points are answered newest first,
as Cloud Monitoring does. Two transports serve the same ``list_time_series``: gRPC (what
the official ``google-cloud-monitoring`` client speaks — it has no REST transport), on
``TUNE2SERVE_MONITORING_API_ENDPOINT`` with the stack's TLS certificate, and the v3 REST
path ``GET /v3/projects/P/timeSeries`` on the control plane. Requests and answers are the
client's own types (``google.cloud.monitoring_v3.types``).

Filters are parsed strictly, so a filter that fails in the cloud fails here: exactly one
``metric.type = "..."``, a known metric and resource type, terms ``FIELD = "v"``,
``FIELD != "v"``, ``FIELD = starts_with("v")``, ``FIELD = one_of("a", "b")`` joined by
``AND`` (or juxtaposed) over ``metric.type``, ``resource.type``, ``metric.label(s).K`` and
``resource.label(s).K`` with K a label of that metric or resource. Stricter than the cloud
(a 400 rather than an empty answer): an unknown label key. Not supported here (a 400 that
says so): ``OR``, ``NOT``, parentheses, ``project``, ``metadata.*``.

Aggregation: ``perSeriesAligner`` ALIGN_NONE | ALIGN_DELTA | ALIGN_SUM (| ALIGN_RATE for
INT64), ``alignmentPeriod`` ≥ 60 s as in the cloud, ``crossSeriesReducer`` REDUCE_NONE |
REDUCE_SUM with ``groupByFields``; anything else is a 400 naming what is supported.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tune2serve.localstack.api_errors import ApiError, invalid

RESPONSE_COUNT = "aiplatform.googleapis.com/prediction/online/response_count"
PREDICTION_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
RESOURCE_LABELS = ("resource_container", "location", "endpoint_id")
METRIC_LABELS = {
    RESPONSE_COUNT: ("deployed_model_id", "response_code", "model_display_name", "endpoint_display_name"),
    PREDICTION_LATENCIES: ("deployed_model_id", "latency_type", "model_display_name", "endpoint_display_name"),
}
SAMPLE_PERIOD_S = 1
RETENTION_S = 3600
MIN_ALIGNMENT_PERIOD_S = 60
# Latency buckets: exponential, 1 ms × 1.2^i, 64 finite buckets (to ~2 min).
BUCKET_SCALE_MS, BUCKET_GROWTH, BUCKET_COUNT = 1.0, 1.2, 64
GRPC_METHOD = "/google.monitoring.v3.MetricService/ListTimeSeries"


@dataclass(frozen=True)
class Served:
    """One data-plane answer, as Vertex AI's metrics count it."""

    at: float
    project: str
    location: str
    endpoint_id: str
    endpoint_display_name: str
    deployed_model_id: str
    model_display_name: str
    status: int
    latency_ms: float


class MetricRecorder:
    """Every answer of the data plane, kept ``RETENTION_S`` (in memory, like faults)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._served: list[Served] = []
        self._lock = threading.Lock()
        self.clock = clock

    def record(self, served: Served) -> None:
        with self._lock:
            self._served.append(served)
            if len(self._served) % 1024 == 0:
                horizon = self.clock() - RETENTION_S
                self._served = [s for s in self._served if s.at >= horizon]

    def snapshot(self) -> list[Served]:
        with self._lock:
            return list(self._served)


# ------------------------------------------------------------------ filters
@dataclass(frozen=True)
class Term:
    field: str  # "metric.type" | "resource.type" | "metric.labels.K" | "resource.labels.K"
    op: str  # "=" | "!=" | "starts_with" | "one_of"
    values: tuple[str, ...]

    def matches(self, value: str | None) -> bool:
        if self.op == "=":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        if self.op == "starts_with":
            return value is not None and value.startswith(self.values[0])
        return value in self.values


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|=|\(|\)|,|:|<|>)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))')


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise invalid(f"The supplied filter [{text}] is invalid: unexpected character at offset {pos}.")
        kind = m.lastgroup or ""
        value = m.group(kind)
        out.append((kind, bytes(value[1:-1], "utf-8").decode("unicode_escape") if kind == "str" else value))
        pos = m.end()
    return out


def _field(name: str, text: str) -> str:
    m = re.fullmatch(r"(metric|resource)\.(type|labels?\.([a-z_][a-z0-9_]*))", name)
    if m is None:
        what = "is not supported by the local stack" if name.split(".")[0] in ("project", "metadata") else \
            "is not a known field"
        raise invalid(f"The supplied filter [{text}] is invalid: {name} {what}; use metric.type, resource.type, "
                      "metric.labels.KEY or resource.labels.KEY.")
    return f"{m[1]}.type" if m[2] == "type" else f"{m[1]}.labels.{m[3]}"


def parse_filter(text: str) -> list[Term]:
    """The filter's terms, or a 400 saying what is wrong with it."""
    if not text.strip():
        raise invalid("Field filter had an invalid value: a filter must specify a metric type "
                      '(metric.type = "...").')
    toks, terms, i = _tokens(text), [], 0

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind or (value is not None and toks[i][1] != value):
            got = toks[i][1] if i < len(toks) else "the end of the filter"
            raise invalid(f"The supplied filter [{text}] is invalid: expected {value or kind} near {got!r}.")
        i += 1
        return toks[i - 1][1]

    while i < len(toks):
        if terms and toks[i] == ("word", "AND"):
            i += 1
        kind, word = toks[i] if i < len(toks) else ("", "")
        if kind == "word" and word in ("OR", "NOT"):
            raise invalid(f"The supplied filter [{text}] uses {word}, which the local stack does not support; "
                          "join terms with AND.")
        if kind == "op" and word == "(":
            raise invalid(f"The supplied filter [{text}] uses parentheses, which the local stack does not support.")
        field = _field(expect("word"), text)
        op = expect("op")
        if op not in ("=", "!="):
            raise invalid(f"The supplied filter [{text}] is invalid: operator {op!r} is not supported for {field}; "
                          "use = or !=.")
        if i < len(toks) and toks[i][0] == "word" and op == "=":
            fn = expect("word")
            if fn not in ("starts_with", "one_of"):
                raise invalid(f"The supplied filter [{text}] is invalid: unknown function {fn}().")
            expect("op", "(")
            values = [expect("str")]
            while fn == "one_of" and i < len(toks) and toks[i] == ("op", ","):
                i += 1
                values.append(expect("str"))
            expect("op", ")")
            terms.append(Term(field, fn, tuple(values)))
        else:
            terms.append(Term(field, op, (expect("str"),)))
    metric_types = [t for t in terms if t.field == "metric.type"]
    if len(metric_types) != 1 or metric_types[0].op != "=":
        raise invalid(f"The supplied filter [{text}] must specify exactly one metric type (metric.type = \"...\").")
    metric = metric_types[0].values[0]
    if metric not in METRIC_LABELS:
        raise invalid(f"The supplied filter [{text}] does not specify a valid combination of metric and monitored "
                      f"resource descriptors: the local stack publishes {', '.join(METRIC_LABELS)}.")
    for t in terms:
        if t.field == "resource.type" and not t.matches(ENDPOINT_RESOURCE):
            raise invalid(f"The supplied filter [{text}] does not specify a valid combination of metric and "
                          f"monitored resource descriptors: {metric} is written on {ENDPOINT_RESOURCE}.")
        kind, _, key = t.field.partition(".labels.")
        if key and key not in (RESOURCE_LABELS if kind == "resource" else METRIC_LABELS[metric]):
            known = RESOURCE_LABELS if kind == "resource" else METRIC_LABELS[metric]
            raise invalid(f"The supplied filter [{text}] is invalid: {t.field} is not a label of "
                          f"{ENDPOINT_RESOURCE if kind == 'resource' else metric} (labels: {', '.join(known)}).")
    return terms


# --------------------------------------------------------------- the answer
@dataclass
class _Series:
    metric: dict[str, str]
    resource: dict[str, str]
    points: dict[int, list[Served]]  # sample-period start (s) → answers in it


def _group(metric: str, served: Iterable[Served]) -> list[_Series]:
    series: dict[tuple[str, ...], _Series] = {}
    for s in served:
        labels = {"deployed_model_id": s.deployed_model_id, "model_display_name": s.model_display_name,
                  "endpoint_display_name": s.endpoint_display_name}
        labels.update({"response_code": str(s.status)} if metric == RESPONSE_COUNT else {"latency_type": "total"})
        if metric == PREDICTION_LATENCIES and not 200 <= s.status < 300:
            continue  # latencies of served predictions only
        resource = {"resource_container": s.project, "location": s.location, "endpoint_id": s.endpoint_id}
        key = tuple(sorted(labels.items())) + tuple(sorted(resource.items()))
        entry = series.setdefault(key, _Series(labels, resource, defaultdict(list)))
        entry.points[int(s.at // SAMPLE_PERIOD_S) * SAMPLE_PERIOD_S].append(s)
    return list(series.values())


def _value(field: str, metric: str, series: _Series) -> str | None:
    if field == "metric.type":
        return metric
    if field == "resource.type":
        return ENDPOINT_RESOURCE
    kind, _, key = field.partition(".labels.")
    return (series.resource if kind == "resource" else series.metric).get(key)


def bucket_index(latency_ms: float) -> int:
    """The exponential bucket of ``latency_ms``: 0 is underflow (< scale), N+1 overflow."""
    if latency_ms < BUCKET_SCALE_MS:
        return 0
    return min(BUCKET_COUNT + 1, 1 + math.floor(math.log(latency_ms / BUCKET_SCALE_MS, BUCKET_GROWTH)))


def _distribution(latencies: list[float]) -> dict[str, Any]:
    n = len(latencies)
    mean = sum(latencies) / n if n else 0.0
    counts = [0] * (BUCKET_COUNT + 2)
    for v in latencies:
        counts[bucket_index(v)] += 1
    while counts and counts[-1] == 0:
        counts.pop()  # trailing zero buckets are omitted, as the API does
    return {"count": n, "mean": mean, "sum_of_squared_deviation": sum((v - mean) ** 2 for v in latencies),
            "bucket_options": {"exponential_buckets": {"num_finite_buckets": BUCKET_COUNT,
                                                       "growth_factor": BUCKET_GROWTH, "scale": BUCKET_SCALE_MS}},
            "bucket_counts": counts}


def _seconds(ts: Any) -> float:
    return ts.timestamp() if hasattr(ts, "timestamp") else float(ts.seconds) + ts.nanos / 1e9


def _aggregation(request: Any, metric: str) -> tuple[str, float, str, list[str]]:
    from google.cloud.monitoring_v3 import types

    agg = request.aggregation
    aligner = types.Aggregation.Aligner(agg.per_series_aligner).name
    reducer = types.Aggregation.Reducer(agg.cross_series_reducer).name
    period = agg.alignment_period.total_seconds() if agg.alignment_period else 0.0
    allowed = {"ALIGN_NONE", "ALIGN_DELTA", "ALIGN_SUM"} | ({"ALIGN_RATE"} if metric == RESPONSE_COUNT else set())
    if aligner not in allowed:
        raise invalid(f"The local stack supports perSeriesAligner {', '.join(sorted(allowed))} for {metric}; "
                      f"got {aligner}.")
    if reducer not in ("REDUCE_NONE", "REDUCE_SUM"):
        raise invalid(f"The local stack supports crossSeriesReducer REDUCE_NONE and REDUCE_SUM; got {reducer}.")
    if aligner != "ALIGN_NONE" and period < MIN_ALIGNMENT_PERIOD_S:
        raise invalid(f"The alignment period must be at least {MIN_ALIGNMENT_PERIOD_S} seconds; got {period:g}s.")
    if reducer != "REDUCE_NONE" and aligner == "ALIGN_NONE":
        raise invalid("A crossSeriesReducer needs a perSeriesAligner other than ALIGN_NONE.")
    groups = list(agg.group_by_fields)
    for g in groups:
        field = _field(g.replace("metric.label.", "metric.labels.").replace("resource.label.", "resource.labels."), g)
        if field.endswith(".type"):
            raise invalid(f"groupByFields {g} is not a label.")
    return aligner, period, reducer, [_field(g, g) for g in groups]


def list_time_series(request: Any, recorder: MetricRecorder) -> Any:
    """``projects.timeSeries.list`` over the recorded answers; ``request`` is a
    ``monitoring_v3.ListTimeSeriesRequest``, the answer a ``ListTimeSeriesResponse``."""
    from google.cloud.monitoring_v3 import types

    if not re.fullmatch(r"projects/[^/]+", request.name or ""):
        raise invalid(f"Field name had an invalid value of \"{request.name}\": must be projects/PROJECT.")
    project = request.name.split("/", 1)[1]
    terms = parse_filter(request.filter)
    metric = next(t.values[0] for t in terms if t.field == "metric.type")
    if "end_time" not in request.interval:
        raise invalid("Field interval.endTime is required.")
    end = _seconds(request.interval.end_time)
    start = _seconds(request.interval.start_time) if "start_time" in request.interval else end
    if start > end:
        raise invalid("Field interval.startTime must not be later than interval.endTime.")
    aligner, period, reducer, groups = _aggregation(request, metric)
    served = [s for s in recorder.snapshot() if s.project == project]
    series = [s for s in _group(metric, served) if all(t.matches(_value(t.field, metric, s)) for t in terms)]
    if aligner != "ALIGN_NONE":
        series = _align(series, period, start)
        if reducer == "REDUCE_SUM":
            series = _reduce(series, groups, metric)
    headers_only = request.view == types.ListTimeSeriesRequest.TimeSeriesView.HEADERS
    out = []
    for s in series:
        points = []
        for begin in sorted(s.points, reverse=True):  # newest first
            length = period if aligner != "ALIGN_NONE" else SAMPLE_PERIOD_S
            if not start < begin + length <= end and not (start == end == begin + length):
                continue
            answers = s.points[begin]
            if metric == RESPONSE_COUNT:
                value = ({"double_value": len(answers) / period} if aligner == "ALIGN_RATE"
                         else {"int64_value": len(answers)})
            else:
                value = {"distribution_value": _distribution([a.latency_ms for a in answers])}
            points.append({"interval": {"start_time": _ts(begin), "end_time": _ts(begin + length)}, "value": value})
        if not points:
            continue
        kind = "GAUGE" if aligner == "ALIGN_RATE" else "DELTA"
        vtype = "INT64" if metric == RESPONSE_COUNT else "DISTRIBUTION"
        out.append({"metric": {"type": metric, "labels": s.metric},
                    "resource": {"type": ENDPOINT_RESOURCE, "labels": s.resource},
                    "metric_kind": kind, "value_type": "DOUBLE" if aligner == "ALIGN_RATE" else vtype,
                    "unit": "1" if metric == RESPONSE_COUNT else "ms",
                    "points": [] if headers_only else points})
    size = request.page_size or len(out) or 1
    offset = int(request.page_token) if request.page_token.isdigit() else 0
    if request.page_token and not request.page_token.isdigit():
        raise invalid(f"Field pageToken had an invalid value of \"{request.page_token}\".")
    page = out[offset:offset + size]
    token = str(offset + size) if offset + size < len(out) else ""
    return types.ListTimeSeriesResponse(time_series=[types.TimeSeries(s) for s in page], next_page_token=token)


def _ts(seconds: float) -> dict[str, int]:
    return {"seconds": int(seconds), "nanos": round((seconds - int(seconds)) * 1e9)}


def _align(series: list[_Series], period: float, start: float) -> list[_Series]:
    out = []
    for s in series:
        points: dict[int, list[Served]] = defaultdict(list)
        for begin, answers in s.points.items():
            points[int(start + ((begin - start) // period) * period)].extend(answers)
        out.append(_Series(s.metric, s.resource, points))
    return out


def _reduce(series: list[_Series], groups: list[str], metric: str) -> list[_Series]:
    merged: dict[tuple[str | None, ...], _Series] = {}
    for s in series:
        key = tuple(_value(g, metric, s) for g in groups)
        labels = {g.partition(".labels.")[2]: v for g, v in zip(groups, key) if g.startswith("metric.") and v}
        resource = {g.partition(".labels.")[2]: v for g, v in zip(groups, key) if g.startswith("resource.") and v}
        entry = merged.setdefault(key, _Series(labels, resource, defaultdict(list)))
        for begin, answers in s.points.items():
            entry.points[begin].extend(answers)
    return list(merged.values())


# --------------------------------------------------------------- transports
def request_from_query(project: str, query: Any) -> Any:
    """A ``ListTimeSeriesRequest`` from the v3 REST query string (``interval.startTime``,
    ``aggregation.groupByFields`` repeated...); unknown parameters are a 400."""
    import json

    from google.cloud.monitoring_v3 import types

    body: dict[str, Any] = {"name": f"projects/{project}"}
    for key in query:
        if key in ("$alt", "alt", "prettyPrint", "$prettyPrint"):
            continue
        values = query.getlist(key)
        parts = [re.sub(r"_([a-z])", lambda m: m[1].upper(), p) for p in key.split(".")]
        node = body
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise invalid(f"Invalid query parameter {key}.")
        repeated = parts[-1] in ("groupByFields",)
        node[parts[-1]] = values if repeated else values[-1]
    for field in ("pageSize",):
        if field in body:
            if not str(body[field]).isdigit():
                raise invalid(f"Invalid value at '{field}' (TYPE_INT32), \"{body[field]}\".")
            body[field] = int(body[field])
    try:
        return types.ListTimeSeriesRequest.from_json(json.dumps(body), ignore_unknown_fields=False)
    except Exception as e:  # json_format.ParseError and friends: the API's 400
        raise invalid(f"Invalid ListTimeSeries request: {e}") from e


def grpc_server(recorder: MetricRecorder, port: int, cert_chain: bytes, key: bytes) -> Any:
    """A started gRPC server answering ``MetricService.ListTimeSeries`` on
    127.0.0.1:``port`` over TLS (the stack's certificate)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from google.cloud.monitoring_v3 import types
    from tune2serve.localstack.api_errors import CODES

    def handler(request_pb: Any, context: Any) -> Any:
        try:
            response = list_time_series(types.ListTimeSeriesRequest.wrap(request_pb), recorder)
        except ApiError as e:
            context.abort(grpc.StatusCode[e.status] if e.status in CODES else grpc.StatusCode.INTERNAL, e.message)
        return types.ListTimeSeriesResponse.pb(response)

    method = grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=types.ListTimeSeriesRequest.pb().FromString,
        response_serializer=lambda m: m.SerializeToString())
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "google.monitoring.v3.MetricService", {"ListTimeSeries": method})])
    server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert_chain)]))
    server.start()
    return server
