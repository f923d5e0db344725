"""What the local Vertex server answers beside Vertex so SDK code never leaves the machine:
Resource Manager's project lookup and an OAuth token endpoint.

- ``GET /v3/projects/{project}`` (Resource Manager v3 ``projects.get``): the SDK asks it
  for a project's number (``PipelineJob.submit``'s bucket-ownership check compares it
  with the bucket's ``projectNumber``) or, given a number, for the id. fake-gcs-server
  says ``projectNumber: "0"`` for every bucket, so the local stack is one project whose
  number is 0: any project id is answered as ``projects/0`` (the ownership check passes,
  as it does in the cloud for a bucket of your own project) and number 0 as the stack's
  project id. The SDK's ``ProjectsClient`` is pointed here by ``localstack/sdk_setup.py``.
- ``POST /_local/oauth2/token``: the token URL of the credentials file ``tune2serve local
  run`` writes (``GOOGLE_APPLICATION_CREDENTIALS``, ``credentials_file``), so samples that call
  ``google.auth.default()`` and ``creds.refresh()`` get a token without reaching
  oauth2.googleapis.com. The local servers check no token; this one is a fixed string.
"""

from __future__ import annotations

import re
from typing import Any

from tune2serve.localstack.api_errors import ApiError

PROJECT_NUMBER = "0"  # what fake-gcs-server reports as every bucket's projectNumber
LOCAL_TOKEN = "local-stack-token"  # not a secret: the local stack accepts any token
_PROJECT_ID = re.compile(r"^[a-z][-a-z0-9.:]*$")  # ids (and domain-scoped ids) as the SDK sends them


def get_project(name: str, stack_project: str) -> dict[str, Any]:
    """Resource Manager's ``Project`` for ``projects/{id or number}``."""
    key = name.split("/", 1)[-1]
    if key.isdigit():
        if key != PROJECT_NUMBER:
            raise ApiError("PERMISSION_DENIED", f"The caller does not have permission (project {key} is not the "
                           f"local stack's; its project number is {PROJECT_NUMBER}).")
        project_id = stack_project
    elif _PROJECT_ID.match(key):
        project_id = key
    else:
        raise ApiError("INVALID_ARGUMENT", f"Invalid project name {name!r}: expected projects/PROJECT_ID "
                       "or projects/PROJECT_NUMBER.")
    return {"name": f"projects/{PROJECT_NUMBER}", "projectId": project_id, "state": "ACTIVE",
            "displayName": project_id}


def token_response() -> dict[str, Any]:
    """An OAuth 2.0 token response (RFC 6749 §5.1) that google-auth accepts."""
    return {"access_token": LOCAL_TOKEN, "expires_in": 3600, "token_type": "Bearer"}


def credentials_file(api_endpoint: str) -> dict[str, str]:
    """A credentials file (``GOOGLE_APPLICATION_CREDENTIALS``) that refreshes against the
    local server: ``external_account_authorized_user``, whose ``token_url`` google-auth
    honours (an ``authorized_user`` file's ``token_uri`` is always replaced by Google's).
    Nothing in it is a secret: the local server hands any caller the same fixed token."""
    return {"type": "external_account_authorized_user",
            "audience": "//iam.googleapis.com/locations/global/workforcePools/tune2serve-local/providers/local",
            "client_id": "tune2serve-local", "client_secret": "tune2serve-local", "refresh_token": "tune2serve-local",
            "token_url": f"{api_endpoint}/_local/oauth2/token",
            "token_info_url": f"{api_endpoint}/_local/oauth2/tokeninfo"}
