"""Maps each top-level source folder (``PACKAGE_ROOTS``) to ``tune2serve.<folder>``, so the
repository shows the architecture while the installed import names stay namespaced (no
top-level ``components`` module to collide with).

A root that is absent is skipped: the container image's build context carries only what
the pipeline steps need (see the Dockerfile and ``.dockerignore``), not the local stack or the demo."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_ROOTS = ("components", "pipelines", "cli", "localstack", "demo")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in PACKAGE_ROOTS:
    if not (Path(__file__).resolve().parent / root / "__init__.py").is_file():
        continue
    package_dir[f"tune2serve.{root}"] = root
    packages.append(f"tune2serve.{root}")
    packages.extend(f"tune2serve.{root}.{sub}" for sub in find_packages(root))

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"": ["*.json", "*.yaml", "*.jinja", "*.css", "*.html", "*.txt"]},
    include_package_data=True,
)
