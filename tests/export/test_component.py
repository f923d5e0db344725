"""The KFP component: compiles inside a pipeline, and its python_func fills the Model
artifact and the export_uri output."""


from pathlib import Path

import yaml
from kfp import compiler, dsl

from tune2serve.components.export.component import export


def test_component_compiles_in_a_pipeline(tmp_path: Path) -> None:
    @dsl.pipeline(name="export-only")
    def pipeline(source: str, dest: str) -> None:
        export(source=source, dest=dest)

    out = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    spec = yaml.safe_load(out.read_text())
    component = spec["components"]["comp-export"]
    assert set(component["inputDefinitions"]["parameters"]) == {
        "source", "dest", "base_model", "checkpoint", "dtype", "max_shard_size"}
    assert component["inputDefinitions"]["parameters"]["checkpoint"]["defaultValue"] == "final"
    assert component["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert set(component["outputDefinitions"]["parameters"]) == {"export_uri"}


def test_python_func_fills_the_model_artifact(tiny_llama: Path, tmp_path: Path) -> None:
    model = dsl.Model(name="model", uri=str(tmp_path / "artifact"), metadata={})
    dest = tmp_path / "export"
    outputs = export.python_func(source=str(tiny_llama), dest=str(dest), model=model, max_shard_size="200KB")
    assert outputs.export_uri == str(dest) == model.uri
    assert (dest / "manifest.json").is_file()
    meta = model.metadata
    assert meta["source"] == str(tiny_llama) and meta["base_model"] == "" and meta["merge"] == {}
    assert meta["bytes"] == sum(p.stat().st_size for p in dest.iterdir() if p.name != "manifest.json")
    assert meta["parameter_count"] > 100_000 and len(meta["manifest_digest"]) == 64
