"""Compiles the promotion pipeline to the YAML that Vertex AI Pipelines runs.

The output is deterministic: it depends on the source and the package version (the
image tag), never on the environment, so ``compiled/promote_checkpoint.yaml`` can be
checked in and a test can hold it in sync with the source.

Nor does it depend on which kfp patch release compiled it: the steps install nothing
(``components/step_component.py``), so the only trace kfp leaves is the spec's
``sdkVersion``, and that is written as the kfp the steps run with, the one pinned in
``requirements.txt`` (the image installs exactly that lock). Where the lock is not at
hand (an installed package, as in the image itself) the installed kfp is that version.

``image`` overrides the container image of every step for a build (for example a tag
pushed by CI). Components take their ``base_image`` when they are decorated, so the
override is applied to the compiled spec: every executor's ``image`` is replaced, and
the result is read back to check that every executor names the new image and nothing
else changed shape.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from tune2serve.components.errors import DestinationError, UsageError

DEFAULT_OUTPUT = Path("compiled") / "promote_checkpoint.yaml"

# An OCI image reference: registry/path[:tag][@digest], no spaces or quotes.
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9](@sha256:[0-9a-f]{64})?$", re.I)


def check_image(image: str) -> str:
    """Returns ``image`` when it reads as a container image reference."""
    if not _IMAGE_RE.match(image) or "//" in image:
        raise UsageError(
            f"--image {image!r} is not a container image reference; "
            "give one such as us-docker.pkg.dev/PROJECT/REPO/tune2serve:TAG"
        )
    return image


def executor_images(spec: dict[str, Any]) -> dict[str, str]:
    """Executor name → container image, from a compiled pipeline spec (the YAML's dict)."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return {name: e.get("container", {}).get("image", "") for name, e in executors.items()}


def worker_pool_images(spec: dict[str, Any]) -> set[str]:
    """The ``image_uri`` of every custom job worker pool in a compiled spec: the image the
    export worker runs in when it runs as a custom job (the task's own executor is GCPC's
    launcher, which only submits the job)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image_uri" and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


def gcpc_launcher_image() -> str:
    """The image GCPC's custom-job launcher runs in, as GCPC's own component declares it
    (its public component spec, not GCPC's private ``_image`` module)."""
    from google_cloud_pipeline_components.v1.custom_job import CustomTrainingJobOp

    return str(CustomTrainingJobOp.component_spec.implementation.container.image)


def step_images(spec: dict[str, Any]) -> set[str]:
    """Every image that runs tune2serve's code: the executors' images but GCPC's launcher,
    and the custom job worker pools' images."""
    launcher = gcpc_launcher_image()
    return {i for i in executor_images(spec).values() if i != launcher} | worker_pool_images(spec)


def load_spec_dict(path: Path) -> dict[str, Any]:
    """Reads a compiled pipeline YAML (the first document: the PipelineSpec)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        return next(iter(yaml.safe_load_all(f)))


_LOCKED_KFP = re.compile(r"^kfp==([^\s\\]+)", re.M)
_RUNTIME_LOCK = Path(__file__).resolve().parents[1] / "requirements.txt"


def runtime_kfp_version() -> str:
    """The kfp version the pipeline's steps run with: the runtime lock's pin."""
    import kfp

    try:
        match = _LOCKED_KFP.search(_RUNTIME_LOCK.read_text(encoding="utf-8"))
    except OSError:
        match = None
    return match.group(1) if match else kfp.__version__


def _set_sdk_version(text: str, version: str) -> str:
    return re.sub(r"^sdkVersion: kfp-\S+$", f"sdkVersion: kfp-{version}", text, count=1, flags=re.M)


def _replace_images(text: str, old: str, new: str) -> str:
    # The compiler writes each executor's image as one `image: REF` line, and a custom
    # job's worker pool image as one `image_uri: REF` line; replace exactly those lines so
    # the rest of the file keeps the compiler's own formatting.
    pattern = re.compile(rf"^(\s+(?:image|image_uri): ){re.escape(old)}$", re.M)
    return pattern.sub(lambda m: m.group(1) + new, text)


def compile_pipeline(output_path: str | Path = DEFAULT_OUTPUT, image: str | None = None) -> Path:
    """Compiles ``promote_checkpoint`` to ``output_path`` (YAML); returns the path.

    Args:
        output_path: where to write the YAML; parent folders are made.
        image: container image for every step instead of ``DEFAULT_IMAGE``.

    Raises:
        UsageError: ``image`` is not an image reference or the path does not end in .yaml.
        DestinationError: the file cannot be written.
    """
    from kfp import compiler

    from tune2serve.components.image import DEFAULT_IMAGE
    from tune2serve.pipelines.promote import promote_checkpoint

    output = Path(output_path)
    if output.suffix not in (".yaml", ".yml"):
        raise UsageError(f"--output {output} must end in .yaml (the format Vertex AI Pipelines reads)")
    if image is not None:
        check_image(image)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # Compile next to the target and rename, so a reader never sees half a file.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=output.parent, delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            compiler.Compiler().compile(promote_checkpoint, str(tmp_path))
            tmp_path.write_text(_set_sdk_version(tmp_path.read_text(encoding="utf-8"), runtime_kfp_version()),
                                encoding="utf-8")
            if image is not None and image != DEFAULT_IMAGE:
                text = _replace_images(tmp_path.read_text(encoding="utf-8"), DEFAULT_IMAGE, image)
                tmp_path.write_text(text, encoding="utf-8")
                images = step_images(load_spec_dict(tmp_path))
                if images != {image}:  # a component that does not use DEFAULT_IMAGE
                    raise UsageError(
                        f"cannot set --image: the compiled executors name {sorted(images)}; "
                        f"every component must use DEFAULT_IMAGE ({DEFAULT_IMAGE})"
                    )
            tmp_path.replace(output)
        finally:
            tmp_path.unlink(missing_ok=True)
    except OSError as e:
        raise DestinationError(f"cannot write the compiled pipeline to {output}: {e}; "
                               "check the folder exists and is writable") from e
    return output


__all__ = ["DEFAULT_OUTPUT", "check_image", "compile_pipeline", "executor_images", "gcpc_launcher_image", "load_spec_dict",
           "runtime_kfp_version", "step_images", "worker_pool_images"]
