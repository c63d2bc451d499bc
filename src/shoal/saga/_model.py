"""What a saga is made of and what it leaves behind: steps, their context, the stored
record of one run and its outcome. No I/O here."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shoal.exceptions import SagaError

__all__ = [
    "Action",
    "Compensation",
    "SagaContext",
    "SagaOutcome",
    "SagaRecord",
    "Status",
    "Step",
    "StepFailure",
    "check_id",
    "check_name",
    "failure",
    "jsonable",
]

Status = Literal["running", "compensating", "completed", "compensated", "failed"]
FINISHED: frozenset[str] = frozenset({"completed", "compensated", "failed"})
MAX_ID_LENGTH = 200
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class SagaContext:
    """What a step's action or compensation is given.

    ``saga`` and ``id`` name the run; ``data`` is the input given to ``run``;
    ``results`` holds the stored result of every step completed so far, by step name
    (in a compensation: of every step the run completed). ``step`` is the step being
    run; ``idempotency_key`` (``saga/id/step``) is unique to it, stable across retries
    and resumes: pass it on (e.g. as an ``Idempotency-Key`` header) so the service
    doing the work can recognise a repeat. In a compensation, ``error`` is the failure
    that made the saga compensate.
    """

    saga: str
    id: str
    step: str
    data: Any
    results: Mapping[str, Any]
    error: StepFailure | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.saga}/{self.id}/{self.step}"

    @property
    def result(self) -> Any:
        """This step's own stored result (what its action returned; in a compensation)."""
        return self.results.get(self.step)


Action = Callable[[SagaContext], Awaitable[Any]]
Compensation = Callable[[SagaContext], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a saga: ``action`` does the work and returns a JSON-serialisable
    result (stored, and seen by later steps as ``ctx.results[name]``); ``compensate``,
    if given, undoes it when a later step fails.

    Both may run more than once for the same saga run (a crash after the work but
    before its progress is stored repeats it): make them idempotent, keyed by
    ``ctx.idempotency_key``. An action that raises (or returns something that is not
    JSON data) fails the step: its own compensation is not run, so an action that
    may have done part of its work must undo that part before raising.
    """

    name: str
    action: Action
    compensate: Compensation | None = None

    def __post_init__(self) -> None:
        check_name("step", self.name)
        if not callable(self.action):
            raise SagaError(f"saga step {self.name!r}: action {self.action!r} is not callable")
        if self.compensate is not None and not callable(self.compensate):
            raise SagaError(
                f"saga step {self.name!r}: compensate {self.compensate!r} is not callable"
            )


@dataclass(frozen=True, slots=True)
class StepFailure:
    """Why a step (or a compensation) failed: the step, the exception's type and
    message, and ``status`` if the exception carried an integer ``status_code`` (as an
    HTTP error does), so a service can answer with it."""

    step: str
    type: str
    message: str
    status: int | None = None

    def __str__(self) -> str:
        return f"step {self.step!r} failed: {self.type}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "type": self.type,
            "message": self.message,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, raw: Any) -> StepFailure | None:
        if raw is None:
            return None
        return cls(raw["step"], raw["type"], raw["message"], raw.get("status"))


def failure(step: str, exc: BaseException) -> StepFailure:
    status = getattr(exc, "status_code", None)
    if isinstance(status, bool) or not isinstance(status, int):
        status = None
    return StepFailure(step, type(exc).__name__, str(exc) or repr(exc), status)


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    """How a run ended. ``status`` is ``completed`` (``results`` holds every step's
    result), ``compensated`` (``error`` is the failure that caused it; ``results`` the
    steps that had completed, all since undone) or, from ``resume``, ``failed`` (a
    compensation kept failing: ``compensation_error`` says how)."""

    saga: str
    id: str
    status: Literal["completed", "compensated", "failed"]
    results: Mapping[str, Any]
    error: StepFailure | None = None
    compensation_error: StepFailure | None = None

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass(slots=True)
class SagaRecord:
    """The durable progress of one run, as stored in the service's state."""

    saga: str
    id: str
    input: Any
    steps: list[str]
    status: Status = "running"
    done: int = 0
    """How many steps' actions have completed (in order)."""
    results: dict[str, Any] = field(default_factory=dict)
    undone: list[str] = field(default_factory=list)
    """The steps compensated so far (in the order they were undone)."""
    error: StepFailure | None = None
    compensation_error: StepFailure | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    """Starts per action (``reserve``) and per compensation (``undo:reserve``)."""
    owner: str | None = None
    lease_until: float = 0.0
    created: float = 0.0
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def outcome(self) -> SagaOutcome:
        if self.status not in FINISHED:
            raise SagaError(f"saga {self.saga!r} {self.id!r} is still {self.status}")
        return SagaOutcome(
            self.saga,
            self.id,
            self.status,  # type: ignore[arg-type]  # narrowed by FINISHED
            dict(self.results),
            self.error,
            self.compensation_error,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "saga": self.saga,
            "id": self.id,
            "input": self.input,
            "steps": self.steps,
            "status": self.status,
            "done": self.done,
            "results": self.results,
            "undone": self.undone,
            "error": None if self.error is None else self.error.to_json(),
            "compensation_error": (
                None if self.compensation_error is None else self.compensation_error.to_json()
            ),
            "attempts": self.attempts,
            "owner": self.owner,
            "lease_until": self.lease_until,
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> SagaRecord:
        try:
            return cls(
                saga=raw["saga"],
                id=raw["id"],
                input=raw["input"],
                steps=list(raw["steps"]),
                status=raw["status"],
                done=int(raw["done"]),
                results=dict(raw["results"]),
                undone=list(raw["undone"]),
                error=StepFailure.from_json(raw["error"]),
                compensation_error=StepFailure.from_json(raw["compensation_error"]),
                attempts=dict(raw["attempts"]),
                owner=raw["owner"],
                lease_until=float(raw["lease_until"]),
                created=float(raw["created"]),
                updated=float(raw["updated"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SagaError(
                f"the saga record at {where} is not one shoal wrote ({exc!r}); "
                "delete the key or restore it"
            ) from exc


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise SagaError(
            f"{kind} name {name!r} is not valid: use 1-63 lowercase letters, digits and '-' "
            "(not at either end)"
        )
    return name


def check_id(saga: str, saga_id: object) -> str:
    if (
        not isinstance(saga_id, str)
        or not 0 < len(saga_id) <= MAX_ID_LENGTH
        or not saga_id.isprintable()
    ):
        raise SagaError(
            f"saga {saga!r}: id {saga_id!r} is not valid: use a str of 1-{MAX_ID_LENGTH} "
            "printable characters (an order id, a request's idempotency key)"
        )
    return saga_id


def jsonable(value: object, what: str) -> Any:
    """``value`` as it will read back from the store (a JSON round trip), else SagaError."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SagaError(
            f"{what} is not JSON data ({exc}); return dicts, lists, str, numbers"
        ) from exc
