"""The local stack's Cloud Monitoring, without a server: strict filter parsing, the
time series answered from recorded data-plane answers (the client's own types), the v3
REST query string, and ``http-503 --match`` faults."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams
from tune2serve.localstack.api_errors import ApiError
from tune2serve.localstack.faults import Fault, FaultBook
from tune2serve.localstack.monitoring import (
    PREDICTION_LATENCIES,
    RESPONSE_COUNT,
    MetricRecorder,
    Served,
    Term,
    list_time_series,
    parse_filter,
    request_from_query,
)

RC = f'metric.type = "{RESPONSE_COUNT}"'


def test_a_filter_of_terms_joined_by_and_or_juxtaposed() -> None:
    terms = parse_filter(f'{RC} AND resource.type="aiplatform.googleapis.com/Endpoint" '
                         'resource.label.endpoint_id = "42" AND metric.labels.response_code != "200" '
                         'AND metric.label.deployed_model_id = one_of("1", "2") '
                         'AND resource.labels.location = starts_with("us-")')
    assert terms[2:] == [Term("resource.labels.endpoint_id", "=", ("42",)),
                         Term("metric.labels.response_code", "!=", ("200",)),
                         Term("metric.labels.deployed_model_id", "one_of", ("1", "2")),
                         Term("resource.labels.location", "starts_with", ("us-",))]


@pytest.mark.parametrize("text, message", [
    ("", "must specify a metric type"),
    ('resource.labels.endpoint_id = "1"', "exactly one metric type"),
    (f'{RC} AND metric.type = "{PREDICTION_LATENCIES}"', "exactly one metric type"),
    ('metric.type = "aiplatform.googleapis.com/prediction/online/request_count"', "valid combination of metric"),
    (f'{RC} AND resource.type = "gce_instance"', "is written on aiplatform.googleapis.com/Endpoint"),
    (f'{RC} AND metric.labels.latency_type = "total"', "metric.labels.latency_type is not a label of"),
    (f'{RC} AND resource.labels.zone = "a"', "resource.labels.zone is not a label of"),
    (f'{RC} AND metrics.type = "x"', "metrics.type is not a known field"),
    (f'{RC} AND project = "p"', "project is not supported by the local stack"),
    (f'{RC} OR resource.labels.endpoint_id = "1"', "uses OR"),
    (f'{RC} AND (resource.labels.endpoint_id = "1")', "uses parentheses"),
    (f'{RC} AND resource.labels.endpoint_id = 1', "unexpected character at offset"),
    (f'{RC} AND resource.labels.endpoint_id > "1"', "operator '>' is not supported"),
    (f'{RC} AND resource.labels.endpoint_id = "1', "unexpected character"),
    (f'{RC} AND resource.labels.endpoint_id = ends_with("1")', "unknown function ends_with()"),
    (f'{RC} AND resource.labels.endpoint_id =', "near 'the end of the filter'"),
])
def test_a_wrong_filter_is_a_400_that_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ApiError, match=message) as e:
        parse_filter(text)
    assert e.value.status == "INVALID_ARGUMENT" and e.value.http_status == 400


def _kind(value: int) -> str:
    from google.api import metric_pb2

    return str(metric_pb2.MetricDescriptor.MetricKind.Name(value))


def _type(value: int) -> str:
    from google.api import metric_pb2

    return str(metric_pb2.MetricDescriptor.ValueType.Name(value))


def _recorder() -> MetricRecorder:
    r = MetricRecorder(clock=lambda: 1000.0)
    for i in range(10):  # deployed model 1: 8 × 200, 2 × 503 in second 100; model 2: 5 × 200 in 101
        r.record(Served(100.05 + i * 0.05, "p", "us-central1", "42", "prod", "1", "old", 503 if i < 2 else 200, 10.0 + i))
    for i in range(5):
        r.record(Served(101.5, "p", "us-central1", "42", "prod", "2", "new", 200, 100.0))
    r.record(Served(101.5, "other", "us-central1", "42", "prod", "9", "x", 200, 1.0))  # another project
    return r


def _request(flt: str, start: int = 90, end: int = 110, **extra: object) -> object:
    from google.cloud.monitoring_v3 import types

    return types.ListTimeSeriesRequest(name="projects/p", filter=flt,
                                       interval={"start_time": {"seconds": start}, "end_time": {"seconds": end}},
                                       **extra)


def test_response_counts_per_deployed_model_and_code() -> None:
    answer = list_time_series(_request(f'{RC} AND resource.labels.endpoint_id = "42"'), _recorder())
    got = {(s.metric.labels["deployed_model_id"], s.metric.labels["response_code"]):
           [(p.interval.start_time.timestamp(), p.value.int64_value) for p in s.points] for s in answer.time_series}
    assert got == {("1", "503"): [(100, 2)], ("1", "200"): [(100, 8)], ("2", "200"): [(101, 5)]}
    s = answer.time_series[0]
    assert s.resource.type == "aiplatform.googleapis.com/Endpoint"
    assert dict(s.resource.labels) == {"resource_container": "p", "location": "us-central1", "endpoint_id": "42"}
    assert (_kind(s.metric_kind), _type(s.value_type)) == ("DELTA", "INT64")
    only_errors = list_time_series(_request(f'{RC} AND metric.labels.response_code != "200"'), _recorder())
    assert [dict(s.metric.labels)["response_code"] for s in only_errors.time_series] == ["503"]


def test_latencies_are_distributions_of_the_successful_answers() -> None:
    answer = list_time_series(_request(f'metric.type = "{PREDICTION_LATENCIES}" AND '
                                       'metric.labels.deployed_model_id = "1"'), _recorder())
    [series] = answer.time_series
    [point] = series.points
    d = point.value.distribution_value
    assert _type(series.value_type) == "DISTRIBUTION" and series.unit == "ms"
    assert d.count == 8 and d.mean == pytest.approx(sum(10.0 + i for i in range(2, 10)) / 8)
    assert sum(d.bucket_counts) == 8 and d.bucket_options.exponential_buckets.growth_factor == 1.2


def test_only_points_ending_inside_the_interval_newest_first() -> None:
    ids = lambda a: {s.metric.labels["deployed_model_id"] for s in a.time_series}
    assert ids(list_time_series(_request(RC, 90, 101), _recorder())) == {"1"}
    assert ids(list_time_series(_request(RC, 101, 110), _recorder())) == {"2"}
    r = _recorder()
    r.record(Served(105.0, "p", "us-central1", "42", "prod", "2", "new", 200, 1.0))
    [series] = [s for s in list_time_series(_request(RC), r).time_series if s.metric.labels["deployed_model_id"] == "2"]
    assert [p.interval.start_time.timestamp() for p in series.points] == [105, 101]


def test_aggregation_delta_and_sum_across_series() -> None:
    agg = {"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_DELTA",
           "cross_series_reducer": "REDUCE_SUM", "group_by_fields": ["metric.label.deployed_model_id"]}
    answer = list_time_series(_request(RC, 50, 110, aggregation=agg), _recorder())
    assert {s.metric.labels["deployed_model_id"]: s.points[0].value.int64_value for s in answer.time_series} == \
        {"1": 10, "2": 5}


@pytest.mark.parametrize("agg, message", [
    ({"alignment_period": {"seconds": 10}, "per_series_aligner": "ALIGN_DELTA"}, "at least 60 seconds"),
    ({"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_MEAN"}, "supports perSeriesAligner"),
    ({"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_DELTA", "cross_series_reducer": "REDUCE_MAX"},
     "supports crossSeriesReducer"),
])
def test_unsupported_aggregations_are_refused(agg: dict[str, object], message: str) -> None:
    with pytest.raises(ApiError, match=message):
        list_time_series(_request(RC, aggregation=agg), _recorder())


def test_interval_and_name_are_checked() -> None:
    from google.cloud.monitoring_v3 import types

    with pytest.raises(ApiError, match="interval.endTime is required"):
        list_time_series(types.ListTimeSeriesRequest(name="projects/p", filter=RC), _recorder())
    with pytest.raises(ApiError, match="must not be later"):
        list_time_series(_request(RC, 110, 90), _recorder())
    with pytest.raises(ApiError, match="must be projects/PROJECT"):
        list_time_series(types.ListTimeSeriesRequest(name="p", filter=RC, interval={"end_time": {"seconds": 1}}),
                         _recorder())


def test_pages_of_series() -> None:
    first = list_time_series(_request(RC, page_size=2), _recorder())
    assert len(first.time_series) == 2 and first.next_page_token == "2"
    rest = list_time_series(_request(RC, page_size=2, page_token="2"), _recorder())
    assert len(rest.time_series) == 1 and rest.next_page_token == ""


def test_the_rest_query_string_becomes_the_request() -> None:
    q = QueryParams([("filter", RC), ("interval.startTime", "2026-01-01T00:00:00Z"),
                     ("interval.endTime", "2026-01-01T00:05:00.5Z"), ("aggregation.alignmentPeriod", "60s"),
                     ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
                     ("aggregation.groupByFields", "metric.label.deployed_model_id"),
                     ("aggregation.groupByFields", "metric.label.response_code"), ("pageSize", "10"),
                     ("$alt", "json;enum-encoding=int")])
    req = request_from_query("p", q)
    assert req.name == "projects/p" and req.filter == RC and req.page_size == 10
    assert req.interval.end_time.timestamp() == pytest.approx(1767225900.5)
    assert list(req.aggregation.group_by_fields) == ["metric.label.deployed_model_id", "metric.label.response_code"]
    assert req.aggregation.alignment_period.total_seconds() == 60
    for bad in ([("interval.stratTime", "x")], [("pageSize", "ten")], [("filter", RC), ("view", "EVERYTHING")]):
        with pytest.raises(ApiError) as e:
            request_from_query("p", QueryParams(bad))
        assert e.value.status == "INVALID_ARGUMENT"


def test_http_503_with_match_fails_only_matching_bodies_and_counts_only_them() -> None:
    book = FaultBook()
    book.add(Fault("http-503", target="7", count=2, match=r"zq-\d"))
    assert book.take_http_error({"7"}, b'{"content": "hello"}') is None
    assert book.take_http_error({"8"}, b'{"content": "zq-1"}') is None  # another target
    assert book.take_http_error({"7"}, b'{"content": "zq-1"}') == 503
    assert book.take_http_error({"7"}, b"plain") is None
    assert book.take_http_error({"7"}, "zq-2 ünïcode".encode()) == 503
    assert book.take_http_error({"7"}, b"zq-3") is None  # count used up
    assert book.list() == []


@pytest.mark.parametrize("fault, message", [
    (Fault("http-503", match="("), "is not a valid regular expression"),
    (Fault("latency", ms=5, match="x"), "--match applies to http-503 and http-429 only"),
])
def test_bad_match_faults_are_refused(fault: Fault, message: str) -> None:
    assert message in fault.problem()


def test_local_fault_with_a_bad_match_is_a_usage_error(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main

    assert main(["local", "fault", "http-503", "--home", str(tmp_path), "--target", "1", "--match", "(x"]) == 2
    assert "--match /(x/ is not a valid regular expression" in capsys.readouterr().err
