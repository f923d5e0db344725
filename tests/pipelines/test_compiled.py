"""The checked-in compiled pipeline is what the source compiles to, byte for byte (golden
test), whichever kfp patch release compiled it; no step installs anything at run time;
and ``tune2serve compile`` writes it, with ``--image`` applied to every step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tune2serve.components.errors import UsageError
from tune2serve.pipelines.compile import compile_pipeline, executor_images, gcpc_launcher_image, load_spec_dict, step_images

GCPC_IMAGE_TAG = gcpc_launcher_image()

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO / "compiled" / "promote_checkpoint.yaml"


RUNTIME_LOCK = REPO / "requirements.txt"


def test_checked_in_yaml_matches_the_source(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "promote_checkpoint.yaml")
    assert CHECKED_IN.is_file(), "compiled/promote_checkpoint.yaml is missing: run `tune2serve compile`"
    assert fresh.read_text() == CHECKED_IN.read_text(), (
        "compiled/promote_checkpoint.yaml is out of date with pipelines/promote.py or a component: "
        "run `tune2serve compile` and commit the result"
    )


def test_no_step_installs_anything_at_run_time() -> None:
    executors = load_spec_dict(CHECKED_IN)["deploymentSpec"]["executors"]
    assert executors
    for name, executor in executors.items():
        container = executor["container"]
        words = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip install" not in words and "ensurepip" not in words, f"{name} installs packages at run time"
        assert "kfp==" not in words, f"{name} names a kfp version"
        if container["image"] == GCPC_IMAGE_TAG:  # the custom-job launcher: GCPC's own image and module
            assert container["command"][-1] == "google_cloud_pipeline_components.container.v1.custom_job.launcher"
            continue
        # the step still runs through kfp's executor, which the image holds
        assert "kfp.dsl.executor_main" in words, name
    # nor does the custom job the launcher submits (its worker pool carries the same container)
    assert "pip install" not in CHECKED_IN.read_text()


def test_the_spec_names_the_kfp_the_image_runs() -> None:
    [locked] = re.findall(r"^kfp==(\S+) ", RUNTIME_LOCK.read_text(), flags=re.M)
    assert load_spec_dict(CHECKED_IN)["sdkVersion"] == f"kfp-{locked}"


@pytest.mark.parametrize("other_patch_release", ["2.17.0", "2.17.99"])
def test_another_kfp_patch_release_compiles_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           other_patch_release: str) -> None:
    """kfp writes its own version into the spec (and, by default, into every step's
    pip install); neither may leak into compiled/."""
    import kfp

    monkeypatch.setattr(kfp, "__version__", other_patch_release)
    fresh = compile_pipeline(tmp_path / "other.yaml")
    assert fresh.read_text() == CHECKED_IN.read_text()


def test_compiling_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    a = compile_pipeline(tmp_path / "a.yaml").read_bytes()
    b = compile_pipeline(tmp_path / "b.yaml").read_bytes()
    assert a == b


def test_image_override_reaches_every_executor(tmp_path: Path) -> None:
    image = "europe-docker.pkg.dev/acme/ml/tune2serve:ci-1234"
    out = compile_pipeline(tmp_path / "custom.yaml", image=image)
    compiled = load_spec_dict(out)
    # discover, export plan/worker/worker-job/commit, four steps, quality-gate, record-promotion, skip, finalize,
    # reject
    assert len(executor_images(compiled)) == 14
    assert set(executor_images(compiled).values()) == {image, GCPC_IMAGE_TAG}  # GCPC's launcher keeps its own
    assert step_images(compiled) == {image}  # incl. the custom job's worker pool
    # nothing but the image lines changed
    default = compile_pipeline(tmp_path / "default.yaml").read_text()
    from tune2serve.components.image import DEFAULT_IMAGE

    assert out.read_text() == default.replace(f"image: {DEFAULT_IMAGE}\n", f"image: {image}\n").replace(
        f"image_uri: {DEFAULT_IMAGE}\n", f"image_uri: {image}\n")


@pytest.mark.parametrize("bad", ["", "not an image", "gs://bucket/image", "UPPER CASE:1"])
def test_bad_image_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="is not a container image reference"):
        compile_pipeline(tmp_path / "x.yaml", image=bad)
    assert not (tmp_path / "x.yaml").exists()


def test_output_must_be_yaml(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"must end in \.yaml"):
        compile_pipeline(tmp_path / "x.json")


def test_compile_verb_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main

    out = tmp_path / "sub" / "p.yaml"
    assert main(["compile", "--output", str(out), "--image", "gcr.io/acme/t2s:1"]) == 0
    assert step_images(load_spec_dict(out)) == {"gcr.io/acme/t2s:1"}
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(out) in captured.err
    assert main(["compile", "--output", str(tmp_path / "p.txt")]) == 2
