"""The one decorator every step's KFP component is made with.

- ``base_image``: the project image (``image.DEFAULT_IMAGE``), which holds the package
  and everything it needs, installed from ``requirements.txt``.
- ``install_kfp_package=False``: by default kfp makes every compiled step start with
  ``pip install kfp==<the version that compiled it>``. That reaches PyPI at run time
  (impossible inside VPC Service Controls, and as the image's non-root user), and makes
  ``compiled/`` depend on which kfp patch release compiled it. The image already holds
  the locked kfp, whose executor runs the step, so the compiled steps install nothing.
"""

from collections.abc import Callable

from kfp import dsl

from tune2serve.components.image import DEFAULT_IMAGE


def step_component(func: Callable) -> dsl.python_component.PythonComponent:
    """``@dsl.component`` on the project image, installing nothing at run time."""
    return dsl.component(func, base_image=DEFAULT_IMAGE, install_kfp_package=False)


__all__ = ["step_component"]
