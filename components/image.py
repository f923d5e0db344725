"""The one container-image reference every component names as ``base_image``.

Derived from the package version, never from the environment, so `compiled/` does not
depend on who compiled it. ``tune2serve compile --image`` overrides it for a build.
"""

from importlib.metadata import PackageNotFoundError, version

IMAGE_REPOSITORY = "us-docker.pkg.dev/tune2serve/tune2serve/tune2serve"


def package_version() -> str:
    try:
        return version("tune2serve")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{package_version()}"
