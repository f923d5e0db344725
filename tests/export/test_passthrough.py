"""Export's pass-through decision on listings (no network: each refusal below is decided
before config.json would be read); the pass and a copy end to end on the local stack are
in tests/deploy/test_custom_folder.py."""

from __future__ import annotations

import pytest

from tune2serve.components.checkpoint.storage import GcsFolder, LocalFolder, ObjectInfo
from tune2serve.components.export.source.layout import Selection
from tune2serve.components.export.plan.passthrough import decide

FULL = Selection("full-checkpoint", "", False, "full model weights")
FOLDER = [ObjectInfo("config.json", 700), ObjectInfo("model-00001-of-00002.safetensors", 900),
          ObjectInfo("model-00002-of-00002.safetensors", 800), ObjectInfo("model.safetensors.index.json", 90),
          ObjectInfo("tokenizer.json", 100), ObjectInfo("tokenizer_config.json", 50), ObjectInfo("README.md", 10)]


@pytest.mark.parametrize("extra,reason", [
    (ObjectInfo("optimizer.pt", 5), "gs://b/m/optimizer.pt is not a file of a deployable folder"),
    (ObjectInfo("trainer_state.json", 5), "trainer_state.json is not a file of a deployable folder: it is training state"),
    (ObjectInfo("pytorch_model.bin", 5), "converts .bin weights to safetensors"),
    (ObjectInfo("checkpoint-5/config.json", 5), "gs://b/m/checkpoint-5/config.json is in a subfolder"),
    (ObjectInfo("model-00003-of-00003.safetensors", 2000), "is 2000 bytes, larger than --max-shard-size"),
])
def test_a_folder_with_anything_to_leave_out_or_rewrite_is_copied(extra: ObjectInfo, reason: str) -> None:
    decision = decide(GcsFolder("gs://b/m"), GcsFolder("gs://b/out"), FULL, FOLDER + [extra], dtype="auto",
                      max_shard_bytes=1000)
    assert not decision.passthrough and reason in decision.reason and decision.reason.startswith("copying: ")


def test_an_adapter_or_a_local_end_is_copied(tmp_path) -> None:  # type: ignore[no-untyped-def]
    adapter = Selection("peft-adapter", "", True, "a PEFT LoRA adapter")
    assert "not a folder of full weights" in decide(GcsFolder("gs://b/m"), GcsFolder("gs://b/out"), adapter, FOLDER,
                                                    dtype="auto", max_shard_bytes=1000).reason
    local = decide(GcsFolder("gs://b/m"), LocalFolder(tmp_path), FULL, FOLDER, dtype="auto", max_shard_bytes=1000)
    assert (local.passthrough, local.reason) == (False, "copying: pass-through needs a gs:// source and a gs:// destination")


@pytest.mark.parametrize("name, doc, path", [
    ("generation_config.json", {"max_new_tokens": 8, "source": {"url": "https://u:tok3n@hub.example/m"}},
     "$.source.url"),
    ("tokenizer_config.json", {"chat_template": "x", "headers": [{"Authorization": "Bearer abcdef0123456789xyz"}]},
     "$.headers[0].Authorization"),
])
def test_a_folder_carrying_a_credential_is_copied_so_the_copy_drops_it(gcs_bucket: str, tiny_llama, tmp_path,  # type: ignore[no-untyped-def]
                                                                        name: str, doc: dict, path: str) -> None:
    """Deployed as it is, the folder would serve the credential; export's copy drops it."""
    import json
    import shutil

    from tests.conftest import upload_folder
    from tune2serve.components.checkpoint.storage import open_folder

    src = tmp_path / "src"
    shutil.copytree(tiny_llama, src)
    before = json.loads((src / name).read_text()) if (src / name).exists() else {}
    (src / name).write_text(json.dumps({**before, **doc}))
    uri = upload_folder(src, gcs_bucket, "m")
    folder = open_folder(uri)
    decision = decide(folder, GcsFolder(f"gs://{gcs_bucket}/out"), FULL, folder.list(), dtype="auto",
                      max_shard_bytes=10**12)
    assert not decision.passthrough and f"{uri}/{name}: {path} holds" in decision.reason
    assert "tok3n" not in decision.reason and "abcdef0123456789xyz" not in decision.reason
    # the same folder without it passes through
    (src / name).write_text(json.dumps(before))
    uri = upload_folder(src, gcs_bucket, "clean")
    folder = open_folder(uri)
    assert decide(folder, GcsFolder(f"gs://{gcs_bucket}/out2"), FULL, folder.list(), dtype="auto",
                  max_shard_bytes=10**12).passthrough
