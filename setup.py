"""Maps the top-level `components/` and `pipelines/` folders to `tune2serve.components`
and `tune2serve.pipelines`, so the repository shows the architecture while the installed
import names stay namespaced (no top-level `components` module to collide with)."""

from setuptools import find_packages, setup

PACKAGE_ROOTS = ("components", "pipelines")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in PACKAGE_ROOTS:
    package_dir[f"tune2serve.{root}"] = root
    packages.append(f"tune2serve.{root}")
    packages.extend(f"tune2serve.{root}.{sub}" for sub in find_packages(root))

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"": ["*.json", "*.yaml", "*.jinja", "*.css", "*.html"]},
    include_package_data=True,
)
