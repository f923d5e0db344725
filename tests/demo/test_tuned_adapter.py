"""The demo's tuned adapter: merged (by PEFT, the oracle) it answers the golden prompts
at temperature 0 exactly as ``transformers serve`` would compute it; the base does not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.demo.deployments import demo_models
from tune2serve.demo.tuned_adapter import GOLDEN, golden_jsonl, greedy_answer, write_golden


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from peft import AutoPeftModelForCausalLM

    root = tmp_path_factory.mktemp("demo")
    base, adapter = demo_models(root)
    out = root / "merged"
    AutoPeftModelForCausalLM.from_pretrained(adapter).merge_and_unload().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(adapter / name, out / name)
    return base, out


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_tuned_answers_golden_and_base_does_not(merged: tuple[Path, Path], case: dict[str, str]) -> None:
    base, tuned = merged
    assert re.search(case["expect"], greedy_answer(tuned, case["prompt"]))
    assert not re.search(case["expect"], greedy_answer(base, case["prompt"]))


def test_golden_file_round_trips_through_the_smoke_test_parser(tmp_path: Path) -> None:
    from tune2serve.components.smoke_test.golden import parse_golden

    path = write_golden(tmp_path / "golden.jsonl")
    cases = parse_golden(path.read_text())
    assert [(c.name, c.prompt, c.expect) for c in cases] == [(g["name"], g["prompt"], g["expect"]) for g in GOLDEN]
    assert path.read_text() == golden_jsonl()
