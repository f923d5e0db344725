"""The one MachineSpec: every spelling of a catalogue machine parses to Vertex AI's names,
anything else is a UsageError naming the problem (never another exception), and validate
and deploy read the flags by that one rule (deploy used to accept ``nvidia_l4`` where
validate refused it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.errors import UsageError
from tune2serve.components.vertex.machine_spec import (
    ACCELERATORS,
    MACHINE_TYPES,
    MachineSpec,
    fits,
    parse_machine_spec,
    recommend_machine_spec,
)

CATALOGUE = sorted((machine, accelerator, count) for machine, (accelerator, count) in MACHINE_TYPES.items())


@st.composite
def spellings(draw: st.DrawFn, name: str) -> str:
    """``name`` as people write it: any letter case, '-' or '_' between words (gcloud
    writes nvidia-l4), blanks around."""
    chars = [draw(st.sampled_from([c.lower(), c.upper()])) if c.isalpha() else
             draw(st.sampled_from(["-", "_"])) if c in "-_" else c for c in name]
    return draw(st.sampled_from(["", " "])) + "".join(chars) + draw(st.sampled_from(["", "\t"]))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), entry=st.sampled_from(CATALOGUE))
def test_every_spelling_of_a_catalogue_machine_is_vertex_names(data: st.DataObject, entry: tuple[str, str, int]) -> None:
    machine, accelerator, count = entry
    spelt_machine = data.draw(spellings(machine).filter(lambda s: "_" not in s))  # machine types use '-' only
    spelt_accelerator = data.draw(spellings(accelerator))
    assert parse_machine_spec(spelt_machine, spelt_accelerator, count) == MachineSpec(machine, accelerator, count)


@settings(max_examples=300, deadline=None)
@given(machine=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(sorted(MACHINE_TYPES))),
       accelerator=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(sorted(ACCELERATORS))),
       count=st.one_of(st.none(), st.integers(-3, 17)))
def test_anything_else_is_a_usage_error_or_a_catalogue_spec(machine: str | None, accelerator: str | None,
                                                           count: int | None) -> None:
    try:
        spec = parse_machine_spec(machine, accelerator, count)
    except UsageError as e:
        assert str(e)  # says what is wrong
        return
    if spec is not None:  # only catalogue machines with the GPUs they carry
        assert MACHINE_TYPES[spec.machine_type] == (spec.accelerator_type, spec.accelerator_count)
        assert spec.known and spec.usable_bytes() > 0
    else:
        assert {machine, accelerator, count} <= {None, "", 0}


def test_the_recommendation_is_the_smallest_spec_that_fits() -> None:
    l4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)
    needed = l4.usable_bytes()
    assert recommend_machine_spec(needed) == l4
    bigger = recommend_machine_spec(needed + 1)
    assert bigger is not None and fits(bigger, needed + 1) and not fits(l4, needed + 1)
    assert not MachineSpec("n1-standard-4", "NVIDIA_TESLA_T4", 1).known  # a spec Vertex may recommend, unsized


@pytest.mark.parametrize("accelerator", ["nvidia_l4", "NVIDIA_L4", "nvidia-l4"])
def test_validate_takes_what_deploy_takes(accelerator: str, tiny_llama: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Deploy upper-cased its flag and validate refused lower case: one rule now, Vertex's
    enum name after a case-insensitive read, in validate's report as in deploy's request."""
    from tune2serve.cli.main import main

    code = main(["validate", str(tiny_llama), "--machine-type", "G2-Standard-12", "--accelerator-type", accelerator,
                 "--accelerator-count", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["summary"]["machine_spec"] == {"machine_type": "g2-standard-12",
                                                          "accelerator_type": "NVIDIA_L4", "accelerator_count": 1}
