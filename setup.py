"""Maps each top-level source folder (``PACKAGE_ROOTS``) to ``tune2serve.<folder>``, so the
repository shows the architecture while the installed import names stay namespaced (no
top-level ``components`` module to collide with).

A root that is absent is skipped: the container image's build context carries only what
the pipeline steps need (see the Dockerfile and ``.dockerignore``), not the local stack or the demo."""

from pathlib import Path

from setuptools import Extension, find_packages, setup

PACKAGE_ROOTS = ("components", "pipelines", "cli", "localstack", "demo")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in PACKAGE_ROOTS:
    if not (Path(__file__).resolve().parent / root / "__init__.py").is_file():
        continue
    package_dir[f"tune2serve.{root}"] = root
    packages.append(f"tune2serve.{root}")
    packages.extend(f"tune2serve.{root}.{sub}" for sub in find_packages(root))

# The export's fused LoRA row merge (components/export/merge/lora_rows.c): C, built with the
# package (the image's build stage has the compiler), so a plain LoRA merge needs no torch.
# -O3 without -march: the AVX2 path is chosen at run time, the portable one elsewhere.
lora_rows = Extension(
    "tune2serve.components.export.merge._lora_rows",
    sources=["components/export/merge/lora_rows.c"],
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wno-unused-parameter"],
)

setup(
    packages=packages,
    ext_modules=[lora_rows],
    package_dir=package_dir,
    package_data={"": ["*.json", "*.yaml", "*.jinja", "*.css", "*.html", "*.txt"]},
    include_package_data=True,
)
