"""Pure functions of the local control plane, tested with == on literal values."""

from __future__ import annotations

import pytest

from tune2serve.localstack import resources as res
from tune2serve.localstack.api_errors import ApiError, error_body
from tune2serve.localstack.faults import Fault, FaultBook
from tune2serve.localstack.model_files import missing_files


def test_split_for_deploy_replaces_key_zero() -> None:
    assert res.split_for_deploy({"a": 100}, {"a": 70, "0": 30}, "b", {"a"}) == {"a": 70, "b": 30}
    assert res.split_for_deploy({"a": 100}, {}, "b", {"a"}) == {"a": 100}
    assert res.split_for_deploy({}, {}, "b", set()) == {"b": 100}


@pytest.mark.parametrize("requested,message", [
    ({"a": 70}, "Sum of all traffic split percentages must be 100; got 70 in {'a': 70}."),
    ({"0": 50, "zz": 50}, "Traffic split names deployed model(s) zz that are not deployed on this endpoint; deployed: a, b."),
    ({"a": 120, "0": -20}, "Traffic split percentages must be between 0 and 100; got {'a': 120, 'b': -20}."),
])
def test_split_for_deploy_refuses_bad_splits(requested: dict[str, int], message: str) -> None:
    with pytest.raises(ApiError) as e:
        res.split_for_deploy({"a": 100}, requested, "b", {"a"})
    assert (e.value.status, e.value.message) == ("INVALID_ARGUMENT", message)


def test_split_for_undeploy_rules() -> None:
    assert res.split_for_undeploy({"a": 100}, {}, "a", set()) == {}
    assert res.split_for_undeploy({"a": 100, "b": 0}, {}, "b", {"a"}) == {"a": 100}
    assert res.split_for_undeploy({"a": 70, "b": 30}, {"a": 100}, "b", {"a"}) == {"a": 100}
    with pytest.raises(ApiError) as e:
        res.split_for_undeploy({"a": 70, "b": 30}, {}, "b", {"a"})
    assert e.value.status == "FAILED_PRECONDITION"


def test_filters() -> None:
    clauses = res.parse_filter('display_name="my ep" AND labels.team="ml" and labels.x:*')
    assert clauses == [("display_name", "=", "my ep"), ("labels.team", "=", "ml"), ("labels.x", ":", "*")]
    assert res.matches({"displayName": "my ep", "labels": {"team": "ml", "x": ""}}, clauses)
    assert not res.matches({"displayName": "my ep", "labels": {"team": "ml"}}, clauses)
    assert res.matches({"displayName": "b"}, res.parse_filter("display_name!=a"))
    with pytest.raises(ApiError, match="Unsupported filter field 'create_time'"):
        res.parse_filter('create_time="2020"')


def test_dedicated_resources_defaults() -> None:
    assert res.dedicated_resources({}) == {"machineSpec": {"machineType": "n1-standard-4"},
                                           "minReplicaCount": 1, "maxReplicaCount": 1}
    assert res.dedicated_resources({"minReplicaCount": 2})["maxReplicaCount"] == 2


def test_recommend_specs_grow_with_size() -> None:
    assert res.recommend_specs(1_000_000)[0] == {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4",
                                                 "acceleratorCount": 1}
    assert res.recommend_specs(70_000_000_000 * 2)[0]["acceleratorCount"] >= 2


def test_error_body_shape() -> None:
    assert error_body("NOT_FOUND", "Endpoint x not found.") == {
        "error": {"code": 404, "message": "Endpoint x not found.", "status": "NOT_FOUND"}}
    assert ApiError("UNAVAILABLE", "down").rpc_status() == {"code": 14, "message": "down"}


def test_missing_files() -> None:
    assert missing_files(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) == []
    assert missing_files(["sub/config.json", "pytorch_model.bin"]) == [
        "config.json", "tokenizer (tokenizer.json or tokenizer.model)", "tokenizer_config.json"]


def test_fault_book_counts_down_and_targets() -> None:
    book = FaultBook()
    book.add(Fault("http-503", target="a", count=2))
    book.add(Fault("latency", ms=50))
    assert [book.take_http_error({"b"}), book.take_http_error({"a"}), book.take_http_error({"a"}),
            book.take_http_error({"a"})] == [None, 503, 503, None]
    assert book.take_latency_ms({"z"}) == 50 and book.take_latency_ms({"z"}) == 50
    book.add(Fault("clear"))
    assert book.list() == []


def test_machine_spec_defaults_mean_unset() -> None:
    cpu = {"machineType": "n1-standard-4", "acceleratorType": "ACCELERATOR_TYPE_UNSPECIFIED", "acceleratorCount": 0}
    assert res.machine_spec_without_defaults(cpu) == {"machineType": "n1-standard-4"}
    assert res.machine_spec_without_defaults({"machineType": "g2", "acceleratorType": 0, "acceleratorCount": 0}) == {
        "machineType": "g2"}
    gpu = {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 1}
    assert res.machine_spec_without_defaults(gpu) == gpu


def test_label_rules() -> None:
    res.check_labels({"tune2serve-run": "run_1", "empty": ""})
    with pytest.raises(ApiError, match="Label key 'Run' is invalid"):
        res.check_labels({"Run": "x"})
    with pytest.raises(ApiError, match="Label value 'A B' of 'k' is invalid"):
        res.check_labels({"k": "A B"})
    with pytest.raises(ApiError, match="At most 64 labels"):
        res.check_labels({f"k{i}": "v" for i in range(65)})


def test_new_fault_kinds_in_the_book() -> None:
    book = FaultBook()
    assert Fault("routing-skew", target="a").problem().startswith("routing-skew needs --target")
    assert Fault("routing-skew", target="a", percent=101).problem() != ""
    assert Fault("nope").problem().startswith("unknown fault kind 'nope'")
    book.add(Fault("routing-skew", target="m/b", percent=30))
    assert book.routing_skew({"x": "m/a"}) is None
    assert book.routing_skew({"x": "m/a", "y": "m/b"}) == ("y", 30)
    assert book.routing_skew({"y": "m/b"}) == ("y", 30)  # lasts until cleared
    book.add(Fault("undeploy-fails", target="y"))
    assert [book.take_operation_failure("deploy-fails", {"y"}), book.take_operation_failure("undeploy-fails", {"y"}),
            book.take_operation_failure("undeploy-fails", {"y"})] == [False, True, False]
    book.add(Fault("control-429", target=":deploy", count=2))
    assert [book.take_control_429("GET /v1/x"), book.take_control_429("POST /v1beta1/p:deploy"),
            book.take_control_429("POST /v1beta1/p:deploy"), book.take_control_429("POST /v1beta1/p:deploy")] == [
        False, True, True, False]
