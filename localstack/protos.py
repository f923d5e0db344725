"""Strict JSON ⇄ proto for the local Vertex server, with the SDK's own types.

Request text is first read as Google's front end reads JSON (``lenient_json``: trailing
commas, single-quoted strings and bare keys accepted, as protobuf's C++ stream parser
does), then parsed with ``Type.from_json(body, ignore_unknown_fields=False)`` so an
unknown field or a wrong type fails here as it does in the cloud (400 INVALID_ARGUMENT).
Resources are stored as v1beta1 JSON and rendered through the type of the API version
the caller used (v1 drops fields only v1beta1 has). The SDK asks for
``$alt=json;enum-encoding=int``; enums are written as numbers then, as names otherwise.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from google.protobuf import json_format

from tune2serve.localstack import lenient_json
from tune2serve.localstack.api_errors import invalid

API_VERSIONS = ("v1", "v1beta1")


def types_for(version: str) -> ModuleType:
    if version == "v1":
        from google.cloud.aiplatform_v1 import types
    elif version == "v1beta1":
        from google.cloud.aiplatform_v1beta1 import types
    else:
        raise invalid(f"Unsupported API version {version!r}; use v1 or v1beta1.")
    return types


def parse(version: str, type_name: str, body: bytes | str | dict[str, Any]) -> Any:
    """The request message, or a 400 naming what is wrong with the payload."""
    cls = getattr(types_for(version), type_name)
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise invalid(f"Invalid JSON payload received. Not UTF-8: {e}") from e
    if isinstance(body, str):
        text = body.strip(" \t\n\v\f\r") or "{}"
        try:  # read as Google's front end reads it (trailing commas, 'quotes', bare keys)
            text = lenient_json.canonical(text)
        except lenient_json.LenientJsonError as e:
            raise invalid(f"Invalid JSON payload received. {e}") from e
    else:
        text = json.dumps(body)
    try:
        return cls.from_json(text, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise invalid(f"Invalid JSON payload received. {e}") from e
    except (ValueError, TypeError) as e:
        raise invalid(f"Invalid JSON payload received. {e}") from e


def to_dict(message: Any, int_enums: bool = False, defaults: bool = True) -> dict[str, Any]:
    """A proto-plus message as its JSON mapping (camelCase). ``defaults``: every field,
    default-valued ones included (what the server's own code reads from a request);
    False: proto3 JSON as Google's REST front end writes it, default-valued fields
    (``0``, ``""``, ``false``, ``[]``, ``{}``, enum ``*_UNSPECIFIED``) left out."""
    return json.loads(type(message).to_json(message, use_integers_for_enums=int_enums, indent=None,
                                            always_print_fields_with_no_presence=defaults))


def render(version: str, type_name: str, stored: dict[str, Any], int_enums: bool) -> dict[str, Any]:
    """A stored (v1beta1 JSON) resource as the caller's API version writes it: through its
    type, default-valued fields omitted as the real API omits them."""
    cls = getattr(types_for(version), type_name)
    message = cls.from_json(json.dumps(stored), ignore_unknown_fields=True)
    return to_dict(message, int_enums, defaults=False)


def type_url(version: str, type_name: str) -> str:
    """The ``@type`` of an ``Any`` holding ``type_name`` of this API version."""
    if type_name == "Empty":
        return "type.googleapis.com/google.protobuf.Empty"
    return f"type.googleapis.com/google.cloud.aiplatform.{version}.{type_name}"


def pack(version: str, type_name: str, payload: dict[str, Any], int_enums: bool) -> dict[str, Any]:
    """An ``Any`` in JSON form: ``{"@type": ..., **fields}``, fields checked by the type."""
    if type_name == "Empty":
        return {"@type": type_url(version, type_name)}
    return {"@type": type_url(version, type_name), **render(version, type_name, payload, int_enums)}
