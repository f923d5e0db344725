"""The one exception tree of tune2serve.

Every error the product raises on purpose is a ``PromotionError``. The CLI maps the
classes to exit codes in one table (``tune2serve.cli.main.EXIT_CODES``); nothing
else calls ``sys.exit``. Each class also subclasses the builtin it resembles, so code
that catches ``ValueError`` or ``ConnectionError`` keeps working.

    PromotionError
    ├── UsageError(ValueError)                bad flags or parameters          → exit 2
    │   └── EventRefused                      an event the tuning-job trigger will not act on
    ├── BadPattern(ValueError)                a user's regular expression that is unsafe to compile
    ├── PatternTimeout(TimeoutError)          a user's pattern ran past its time limit
    ├── SourceError(OSError)                  a checkpoint folder cannot be read
    │   ├── SourceNotFoundError(FileNotFoundError)
    │   └── SourceReadError
    ├── DestinationError(OSError)             an export destination cannot be written
    │   ├── ConcurrentWriteError              another writer changed the object first
    │   └── RefusalFromListing                an export refusal judged from one listing (re-listed)
    ├── CheckpointError(ValueError)           the checkpoint's content is wrong
    │   ├── ValidationFailedError             validate found at least one error finding
    │   ├── UnsafePickleError                 a .bin pickle names a non-tensor global
    │   ├── MergeError                        an adapter does not fit its base
    │   └── JsonLimitError                    a JSON file too large, too deep, or not JSON
    ├── VertexError                           Vertex AI answered with an error
    │   ├── VertexUserError(ValueError)       400/403/404/409: not retried
    │   ├── VertexUnavailableError(ConnectionError)  429/5xx/connection: retried
    │   └── OperationFailedError              a long-running operation ended in error
    ├── SmokeTestFailedError                  a smoke-test check failed
    ├── QualityGateError                      the quality gate held or rejected the candidate
    ├── PromotionAbortedError                 verify-traffic rolled back
    ├── EndpointBusyError                     another promotion holds the endpoint's lease
    ├── OutsideChangeError                    someone else changed the split mid-promotion
    ├── StepFailedError                       a canary step's checks failed (always rolled back)
    ├── BakeHeldError                         an inconclusive bake left at its step (hold)
    └── StaleListingError                     a listing of DEST that no longer holds (list again)
"""

from __future__ import annotations

from collections.abc import Mapping


class PromotionError(Exception):
    """Root of every error tune2serve raises on purpose.

    ``file`` names the file the problem is in, when there is one, so messages and
    findings can point at it.
    """

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file

    def __str__(self) -> str:
        return self.message


class UsageError(PromotionError, ValueError):
    """Flags or parameters that cannot work together or do not parse."""


class SourceError(PromotionError, OSError):
    """A checkpoint folder (local or gs://) cannot be listed or read."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """The folder or object does not exist."""


class SourceReadError(SourceError):
    """The folder exists but reading it failed (permissions, network, short read)."""


class DestinationError(PromotionError, OSError):
    """An export destination cannot be written, or already holds something else."""


class ConcurrentWriteError(DestinationError):
    """A write's generation precondition failed: another writer created, replaced or
    deleted the object since it was read, so this write did not happen."""


class RefusalFromListing(DestinationError):
    """An export's refusal judged from one listing of DEST (files of no export, foreign
    staging, another unfinished export's file): it stands only once a second listing agrees."""


class StaleListingError(PromotionError):
    """A listing of DEST that no longer holds (a state file it named is gone): list again."""


class CheckpointError(PromotionError, ValueError):
    """The checkpoint's content is wrong: files, headers, config, tokenizer, weights."""


class ValidationFailedError(CheckpointError):
    """Validation produced at least one error finding; ``report`` holds them all."""

    def __init__(self, message: str, *, report: object | None = None, file: str | None = None):
        super().__init__(message, file=file)
        self.report = report


class UnsafePickleError(CheckpointError):
    """A pickle references a global outside the allow-list of torch tensor types."""


class MergeError(CheckpointError):
    """A LoRA adapter cannot be merged into the given base."""


class VertexError(PromotionError):
    """Vertex AI (or the local stack standing in for it) answered with an error."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        resource_name: str | None = None,
        operation_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.resource_name = resource_name
        self.operation_name = operation_name


class VertexUserError(VertexError, ValueError):
    """400/403/404/409: the request is wrong or not allowed; retrying will not help."""


class VertexUnavailableError(VertexError, ConnectionError):
    """429/5xx or a dropped connection: worth retrying with backoff."""


class OperationFailedError(VertexError):
    """A long-running operation completed with an error."""


class SmokeTestFailedError(PromotionError):
    """A smoke-test check failed; the message holds the request and the answer."""


class QualityGateError(PromotionError):
    """The quality gate (``tune2serve eval``) did not promote the candidate: ``verdict``
    is "hold" or "reject"; the message names the rule and the cases that regressed."""

    def __init__(self, message: str, *, verdict: str = "hold") -> None:
        super().__init__(message)
        self.verdict = verdict


class PromotionAbortedError(PromotionError):
    """verify-traffic rolled back; the model that served before still serves."""


class EndpointBusyError(PromotionError):
    """Another promotion holds the endpoint's lease; ``holder`` names it. Nothing was changed."""

    def __init__(self, message: str, *, holder: str = "", expires_at: float = 0.0) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class OutsideChangeError(PromotionError):
    """The endpoint's traffic split is not the one this promotion set: someone else
    changed it. Never rolled back; the promotion stops and leaves it as it is. The splits
    are kept as Vertex reads them: zero shares absent, ids sorted."""

    def __init__(self, endpoint: str, expected: Mapping[str, int], found: Mapping[str, int], when: str) -> None:
        self.endpoint, self.when = endpoint, when
        self.expected, self.found = _without_zeros(expected), _without_zeros(found)
        super().__init__(f"{endpoint}: the traffic split was changed outside tune2serve {when}: expected "
                         f"{self.expected}, found {self.found}. Their change stands: tune2serve stopped the "
                         "promotion and left the endpoint exactly as it is (no further step, no rollback)")

    def as_dict(self) -> dict[str, object]:
        return {"when": self.when, "expected_split": self.expected, "found_split": self.found}


def _without_zeros(split: Mapping[str, int]) -> dict[str, int]:
    # verify_traffic.traffic.normalize's rule; this module imports nothing of the steps
    return {k: int(v) for k, v in sorted(split.items()) if int(v) != 0}


class StepFailedError(PromotionError):
    """A canary step's checks failed (inside verify-traffic: always turned into a rollback)."""


class BakeHeldError(PromotionError):
    """An inconclusive bake under ``on_inconclusive="hold"``: the split is left as it is."""


class BadPattern(PromotionError, ValueError):
    """A pattern (golden ``expect``, adapter ``target_modules``) that is not a regular
    expression or is too large to compile safely; the caller says whose and where."""


class PatternTimeout(PromotionError, TimeoutError):
    """A match ran past its time limit (catastrophic backtracking)."""


class JsonLimitError(CheckpointError):
    """A JSON file that is too large, too deep, or not JSON at all."""


class EventRefused(UsageError):
    """An event the trigger will not act on: malformed, or naming a job or an output it
    may not promote. Acknowledged (a redelivery cannot change it) and logged by name of
    the problem, never with the payload."""


__all__ = [
    "BadPattern",
    "BakeHeldError",
    "CheckpointError",
    "ConcurrentWriteError",
    "DestinationError",
    "RefusalFromListing",
    "StaleListingError",
    "EndpointBusyError",
    "EventRefused",
    "JsonLimitError",
    "MergeError",
    "OperationFailedError",
    "OutsideChangeError",
    "PatternTimeout",
    "PromotionAbortedError",
    "PromotionError",
    "QualityGateError",
    "SmokeTestFailedError",
    "SourceError",
    "SourceNotFoundError",
    "SourceReadError",
    "StepFailedError",
    "UnsafePickleError",
    "UsageError",
    "ValidationFailedError",
    "VertexError",
    "VertexUnavailableError",
    "VertexUserError",
]

