"""--base-model: the export's tensor names and shapes against the base model's headers.

vLLM builds the base architecture and expects every one of its tensors: a tensor
missing from a merged export (error ``base-tensor-missing``) or with another shape
(error ``base-shape-mismatch``) fails the load after the GPUs are provisioned. Extra
tensors are a warning (the loader may ignore or reject them). A tied export may omit
``lm_head.weight``.
"""

from __future__ import annotations

from tune2serve.components.checkpoint.index import find_weight_files
from tune2serve.components.checkpoint.safetensors_header import TensorInfo, inspect_header
from tune2serve.components.checkpoint.storage import open_folder
from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error, info, warning

MAX_LISTED = 5


def base_tensors(uri: str) -> dict[str, TensorInfo]:
    """Every tensor in the base's safetensors headers (raises SourceError when the base
    cannot be read: that is a usage problem, not a finding about the export)."""
    folder = open_folder(uri)
    listing = folder.list()
    sizes = {o.name: o.size for o in listing}
    tensors: dict[str, TensorInfo] = {}
    for name in find_weight_files(listing).safetensors:
        result = inspect_header(folder, name, sizes[name])
        if result.header is not None:
            tensors.update(result.header.tensors)
    return tensors


def check_base_model(ckpt: Checkpoint) -> list[Finding]:
    uri = ckpt.options.base_model
    if not uri:
        return []
    if not ckpt.tensors:
        return [info("base-not-compared", "the export has no readable safetensors headers; nothing to compare with "
                                          f"the base model {uri}")]
    base = base_tensors(uri)
    if not base:
        return [info("base-not-compared", f"the base model {uri} has no readable safetensors headers")]
    found: list[Finding] = []
    tied = (ckpt.config_doc or {}).get("tie_word_embeddings") is True
    missing = sorted(n for n in base if n not in ckpt.tensors and not (tied and n == "lm_head.weight"))
    extra = sorted(n for n in ckpt.tensors if n not in base)
    mismatched = sorted(n for n in base if n in ckpt.tensors and tuple(base[n].shape) != tuple(ckpt.tensors[n].shape))
    if missing:
        found.append(error("base-tensor-missing", f"{len(missing)} tensors of the base model are missing from the export: "
                                                  f"{_listed(missing)}; vLLM refuses to load it"))
    for name in mismatched[:MAX_LISTED]:
        found.append(error("base-shape-mismatch", f"{name} has shape {list(ckpt.tensors[name].shape)}; the base model "
                                                  f"has {list(base[name].shape)}", ckpt.tensor_files[name]))
    if len(mismatched) > MAX_LISTED:
        found.append(error("base-shape-mismatch", f"{len(mismatched) - MAX_LISTED} more tensors differ in shape from the base"))
    if extra:
        found.append(warning("base-tensor-extra", f"{len(extra)} tensors are not in the base model: {_listed(extra)} "
                                                  "(adapter weights left unmerged?)", ckpt.tensor_files[extra[0]]))
    if not found:
        found.append(info("base-matches", f"all {len(base)} tensors of the base model are present with the same shapes"))
    return found


def _listed(names: list[str]) -> str:
    return ", ".join(names[:MAX_LISTED]) + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
