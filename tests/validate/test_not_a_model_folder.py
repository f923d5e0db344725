"""validate on something that is not a model folder says so first and alone; repeated
findings are capped per code so a report stays readable."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.components.validate import ValidateOptions, validate_checkpoint
from tune2serve.components.validate.findings import MAX_PER_CODE

_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(models=st.lists(st.sampled_from(["checkpoint-10", "checkpoint-20", "final", "a/b/export"]), min_size=1,
                       max_size=4, unique=True),
       strays=st.integers(0, 30))
def test_a_parent_folder_is_named_as_such(models: list[str], strays: int, tiny_llama: Path,
                                          tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    parent = tmp_path_factory.mktemp("parent")
    for m in models:
        shutil.copytree(tiny_llama, parent / m)
    for i in range(strays):
        (parent / f"notes-{i}.txt").write_text("x")
    report = validate_checkpoint(str(parent), ValidateOptions())
    assert [(f.severity, f.code) for f in report.findings] == [("error", "not-a-model-folder")]
    message = report.findings[0].message
    assert "holds no config.json and no weights at its top level: it is not a model folder" in message
    assert all(m in message for m in sorted(models)[:5])
    assert not report.ok


@_SETTINGS
@given(count=st.integers(MAX_PER_CODE + 1, 80))
def test_repeated_findings_are_capped_per_code(count: int, tiny_llama: Path, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("m") / "model"
    shutil.copytree(tiny_llama, folder)
    for i in range(count):
        (folder / f"helper_{i}.py").write_text("print(1)\n")
    report = validate_checkpoint(str(folder), ValidateOptions())
    py = [f for f in report.findings if f.code == "python-files"]
    assert len(py) == MAX_PER_CODE + 1
    assert py[-1].message == f"… and {count - MAX_PER_CODE} more python-files findings"
    assert report.ok  # warnings only: the cap changes no verdict


def test_fewer_than_the_cap_are_all_kept(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    for i in range(3):
        (folder / f"helper_{i}.py").write_text("print(1)\n")
    report = validate_checkpoint(str(folder), ValidateOptions())
    assert [f.file for f in report.findings if f.code == "python-files"] == [f"helper_{i}.py" for i in range(3)]
