"""Vertex resource names as frozen value objects: parsed at the edge (CLI flags,
component inputs), passed inward typed, printed back unchanged."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tune2serve.components.errors import UsageError

_NAME = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/(?P<kind>endpoints|models|tuningJobs|operations)/(?P<id>[^/@]+)(@(?P<version>[^/]+))?$")


def _a(kind: str) -> str:
    noun = kind[:-1] if kind.endswith("s") else kind
    return ("an " if noun[0] in "aeiou" else "a ") + noun


@dataclass(frozen=True)
class ResourceName:
    kind: str
    project: str
    location: str
    id: str

    def __str__(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/{self.kind}/{self.id}"

    @classmethod
    def parse(cls, text: str, kind: str, *, project: str | None = None, location: str | None = None) -> ResourceName:
        """Accepts a full resource name, or a bare id when project and location are known."""
        text = text.strip()
        m = _NAME.match(text)
        if m:
            if m["kind"] != kind:
                raise UsageError(f"{text!r} is {_a(m['kind'])} name, expected {_a(kind)} (projects/P/locations/L/{kind}/ID)")
            return cls(kind, m["project"], m["location"], m["id"])
        if text and "/" not in text and project and location:
            return cls(kind, project, location, text)
        raise UsageError(f"{text!r} is not {_a(kind)} resource name or id; expected projects/P/locations/L/{kind}/ID")


def endpoint_name(text: str, project: str | None = None, location: str | None = None) -> ResourceName:
    return ResourceName.parse(text, "endpoints", project=project, location=location)


def model_name(text: str, project: str | None = None, location: str | None = None) -> ResourceName:
    return ResourceName.parse(text, "models", project=project, location=location)


MAX_LABEL_LENGTH = 63


def sanitize_label_value(text: str) -> str:
    """A Vertex label value: lowercase, every character outside ``[a-z0-9_-]`` replaced
    by ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:MAX_LABEL_LENGTH]
