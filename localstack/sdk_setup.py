"""The one set-up that points Google's own SDK code at the local stack.

``tune2serve local run -- CMD`` (and ``local shell``) copies this file as
``sitecustomize.py`` into a folder it puts first on ``PYTHONPATH``, so every Python
process CMD starts runs it before the user's code, in whatever environment that Python
has (it imports nothing but the standard library until the SDK itself is imported, and
never imports tune2serve). Nothing changes for a process that never imports the SDK.

What it does, from the variables ``local run`` sets (those of ``tune2serve local env``):

- when ``google.cloud.aiplatform`` has been imported (``import vertexai`` imports it too),
  ``aiplatform.init(api_endpoint=$TUNE2SERVE_VERTEX_API_ENDPOINT, api_transport="rest",
  credentials=AnonymousCredentials())`` — the SDK reads no environment variable for
  these, so without this its calls go to the real regional endpoint. A later
  ``vertexai.init(project=..., location=...)`` in the user's code keeps them (``init``
  changes only what it is given);
- Resource Manager's ``ProjectsClient`` created without ``client_options`` or
  ``transport`` (the SDK's project-number lookups: ``PipelineJob.submit``'s
  bucket-ownership check, a project number in ``GOOGLE_CLOUD_PROJECT``) talks REST to the
  local server, which answers ``GET /v3/projects/ID`` — so that lookup stays on this
  machine instead of retrying cloudresourcemanager.googleapis.com for about a minute.

- Vertex AI's GAPIC clients (``aiplatform_v1`` / ``aiplatform_v1beta1``
  ``*ServiceClient``) built for the real Vertex host — the default, or
  ``client_options={"api_endpoint": "us-central1-aiplatform.googleapis.com"}`` as the
  docs' samples write it — talk REST to the local server (``point_gapic_clients``).

What it does not do: a client given another endpoint or a transport object of its own
keeps them; async clients are left alone (gRPC only). The curl and
``google.auth`` sides need no code: ``local run`` sets ``CURL_CA_BUNDLE`` (curl trusts
the local CA) and ``GOOGLE_APPLICATION_CREDENTIALS`` (a file whose token URI is the local
server, so ``google.auth.default()`` and ``creds.refresh()`` work offline).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

API_ENDPOINT_ENV = "TUNE2SERVE_VERTEX_API_ENDPOINT"
AIPLATFORM = "google.cloud.aiplatform"
PROJECTS_CLIENT = "google.cloud.resourcemanager_v3.services.projects.client"
GAPIC = ("google.cloud.aiplatform_v1", "google.cloud.aiplatform_v1beta1")


def point_aiplatform(aiplatform: ModuleType, endpoint: str) -> None:
    """``aiplatform.init`` with the local stack's endpoint, REST and anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials

    aiplatform.init(api_endpoint=endpoint, api_transport="rest", credentials=AnonymousCredentials())


def point_projects_client(module: ModuleType, endpoint: str) -> None:
    """``ProjectsClient()`` with no endpoint of its caller's talks REST to ``endpoint``."""
    cls = module.ProjectsClient
    original = cls.__init__
    if getattr(original, "_tune2serve_local", False):
        return

    def __init__(self: Any, **kwargs: Any) -> None:
        if kwargs.get("client_options") is None and kwargs.get("transport") is None:
            kwargs.update(client_options={"api_endpoint": endpoint}, transport="rest")
            if kwargs.get("credentials") is None:  # the local server checks none
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
        original(self, **kwargs)

    __init__._tune2serve_local = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


def _is_vertex_host(api_endpoint: str | None) -> bool:
    """None (the client's default host) or Vertex AI's real API host, regional or global."""
    if api_endpoint is None:
        return True
    host = api_endpoint.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return host == "aiplatform.googleapis.com" or host.endswith("-aiplatform.googleapis.com")


def point_gapic_clients(module: ModuleType, endpoint: str) -> None:
    """Vertex AI's GAPIC clients (``aiplatform_v1.PredictionServiceClient`` ...) that a
    user builds for the real Vertex host (the default, or ``client_options={"api_endpoint":
    "REGION-aiplatform.googleapis.com"}`` as the docs' samples do) talk REST to the stack;
    a client given any other endpoint, or a transport object, is left as it is."""
    import copy

    for name in dir(module):
        cls = getattr(module, name)
        if not (name.endswith("ServiceClient") and isinstance(cls, type)):
            continue
        original = cls.__init__
        if getattr(original, "_tune2serve_local", False):
            continue

        def __init__(self: Any, *, _original: Any = original, **kwargs: Any) -> None:
            options = kwargs.get("client_options")
            given = options.get("api_endpoint") if isinstance(options, dict) else getattr(options, "api_endpoint", None)
            if _is_vertex_host(given) and kwargs.get("transport") in (None, "grpc", "rest"):
                if isinstance(options, dict) or options is None:
                    kwargs["client_options"] = {**(options or {}), "api_endpoint": endpoint}
                else:
                    kwargs["client_options"] = copy.copy(options)
                    kwargs["client_options"].api_endpoint = endpoint
                kwargs["transport"] = "rest"
                if kwargs.get("credentials") is None:
                    from google.auth.credentials import AnonymousCredentials

                    kwargs["credentials"] = AnonymousCredentials()
            _original(self, **kwargs)

        __init__._tune2serve_local = True  # type: ignore[attr-defined]
        cls.__init__ = __init__


class AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``hooks[name](module)`` once module ``name`` has been executed (imported)."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]) -> None:
        self.hooks = dict(hooks)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        hook = self.hooks.get(fullname)
        if hook is None:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self.hooks[fullname]
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec


def install(environ: dict[str, str] | os._Environ[str] = os.environ) -> AfterImport | None:
    """Installs the import hooks when the environment names a local stack."""
    endpoint = environ.get(API_ENDPOINT_ENV)
    if not endpoint:
        return None
    hooks: dict[str, Callable[[ModuleType], None]] = {
        AIPLATFORM: lambda m: point_aiplatform(m, endpoint),
        PROJECTS_CLIENT: lambda m: point_projects_client(m, endpoint),
        **{name: (lambda m: point_gapic_clients(m, endpoint)) for name in GAPIC},
    }
    for name, hook in list(hooks.items()):
        if name in sys.modules:  # imported before us (unusual): set it up now
            hook(sys.modules[name])
            del hooks[name]
    finder = AfterImport(hooks)
    sys.meta_path.insert(0, finder)
    return finder


def chain_next_sitecustomize(here: str) -> None:
    """Runs the ``sitecustomize`` this file shadows (a distribution's own), if any."""
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry])
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


if __name__ == "sitecustomize":  # copied by `tune2serve local run` and run by site.py
    install()
    chain_next_sitecustomize(os.path.dirname(os.path.abspath(__file__)))
