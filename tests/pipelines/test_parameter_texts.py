"""The pipeline's parameters as a person starting a run in the Vertex AI UI reads them:
the form lists every parameter alphabetically, so the description names the required
ones first and each says it is required; paths say gs:// for cloud runs; every
JSON-valued parameter shows an example that parses; canary_percent's default is the
share it means. Read from the compiled YAML the UI is given."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tune2serve.components import ranges
from tune2serve.pipelines.compile import load_spec_dict

COMPILED = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec_dict(COMPILED)


def _parameters(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(spec["root"]["inputDefinitions"]["parameters"])


def test_the_description_names_the_required_parameters_first(spec: dict[str, Any]) -> None:
    params = _parameters(spec)
    required = sorted(n for n, p in params.items() if "defaultValue" not in p and not p.get("isOptional"))
    assert required == ["export_dest", "project", "source"]
    description = spec["pipelineInfo"]["description"]
    said = re.match(r"Required: ([a-z_, ]+) \(every other parameter has a default\)\. ", description)
    assert said is not None, description
    assert sorted(said.group(1).split(", ")) == required
    for name, p in params.items():
        assert p["description"].startswith("Required. ") is (name in required), name


def test_paths_say_gs_for_cloud_runs(spec: dict[str, Any]) -> None:
    """A cloud user is never offered a local path as if it worked there."""
    for name in ("source", "export_dest", "base_model"):
        text = _parameters(spec)[name]["description"]
        assert "gs://" in text, name
        local = re.findall(r"local (?:path|folder)[^.;]*", text)
        assert all("only for runs on this machine" in phrase for phrase in local), (name, local)


def test_every_json_valued_parameter_gives_an_example_that_parses(spec: dict[str, Any]) -> None:
    """A LIST or STRUCT parameter is typed as JSON in the UI's form: its description holds
    'for example <JSON>' of that type; golden's (JSON Lines text) examples are golden cases
    the smoke test's own parser accepts."""
    from tune2serve.components.smoke_test.golden import load_golden

    kinds = {"LIST": list, "STRUCT": dict}
    json_valued = {n: p for n, p in _parameters(spec).items() if p["parameterType"] in kinds}
    assert json_valued, "the pipeline has JSON-valued parameters (psc_project_allowlist)"
    for name, p in json_valued.items():
        found = re.search(r"for example (\[.*?\]|\{.*?\})[;,. ]", p["description"])
        assert found is not None, name
        assert isinstance(json.loads(found.group(1)), kinds[p["parameterType"]]), name
    golden = _parameters(spec)["golden"]["description"]
    lines = re.search(r"for example (\{.*?\}) on one line and (\{.*?\}) on the next", golden)
    assert lines is not None, golden
    assert len(load_golden("\n".join(lines.groups()) + "\n", "golden")) == 2


def test_canary_percent_defaults_to_the_share_it_means(spec: dict[str, Any]) -> None:
    p = _parameters(spec)["canary_percent"]
    assert p["defaultValue"] == ranges.DEFAULT_CANARY_PERCENT == 10
    assert "(default 10)" in p["description"]
