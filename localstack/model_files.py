"""The minimal model-folder check the local deploy makes (what Vertex's serving container
needs to start): config.json, weights, a tokenizer. The full check is `validate`'s job;
this one only keeps a broken folder from becoming a half-made deployment."""

from __future__ import annotations

from pathlib import Path

from tune2serve.localstack.api_errors import invalid

WEIGHT_SUFFIXES = (".safetensors", ".bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def missing_files(names: list[str]) -> list[str]:
    """What a folder holding ``names`` lacks, described for a message."""
    top = {n for n in names if "/" not in n}
    missing = []
    if "config.json" not in top:
        missing.append("config.json")
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in top):
        missing.append("weights (*.safetensors or *.bin)")
    if not any(t in top for t in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json or tokenizer.model)")
    if "tokenizer_config.json" not in top:
        missing.append("tokenizer_config.json")
    return missing


def check_gcs_folder(gcs_uri: str) -> list[str]:
    """Lists the folder (names only, nothing downloaded); returns the top-level file
    names to copy, or raises 400 naming what is missing."""
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.errors import PromotionError, SourceNotFoundError

    if not gcs_uri.startswith("gs://"):
        raise invalid(f"custom_model.gcs_uri {gcs_uri!r} must be a gs:// URI.")
    try:
        names = [o.name for o in open_folder(gcs_uri).list()]
    except SourceNotFoundError:
        names = []
    except PromotionError as e:
        raise invalid(f"Cannot list the model files at {gcs_uri}: {e}") from e
    if not names:
        raise invalid(f"No model files found at {gcs_uri}: the folder is empty or does not exist.")
    missing = missing_files(names)
    if missing:
        raise invalid(f"The model at {gcs_uri} is missing {', '.join(missing)}; "
                      "export a complete Hugging Face folder there and deploy again.")
    return [n for n in names if "/" not in n]


def check_local_folder(path: Path, source: str) -> None:
    missing = missing_files([p.name for p in path.iterdir() if p.is_file()])
    if missing:
        raise invalid(f"The copy of {source} is missing {', '.join(missing)}.")


def weights_bytes(gcs_uri: str) -> int:
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.errors import PromotionError

    try:
        return sum(o.size for o in open_folder(gcs_uri).list() if o.name.endswith(WEIGHT_SUFFIXES))
    except PromotionError as e:
        raise invalid(f"Cannot list the model files at {gcs_uri}: {e}") from e
