"""Sagas: a sequence of steps across services, each with its compensation, whose
progress is stored in the service's own state so that it survives a crash.

    place_order = shoal.Saga("place-order", [
        shoal.Step("reserve", reserve, compensate=release),
        shoal.Step("charge", charge, compensate=refund),
        shoal.Step("confirm", confirm),
    ])
    outcome = await place_order.run(order_id, {"product_id": "mug", "quantity": 2})
    if outcome.completed: ...            # outcome.results["confirm"]
    else: ...                            # compensated: outcome.error says why

Each step's action gets a :class:`SagaContext` (the saga id, the input, the results
of earlier steps) and returns JSON data, stored before the next step starts. If an
action raises, the compensations of the completed steps run in reverse, retried with
backoff; a run that cannot be compensated is marked ``failed`` and ``run`` raises
SagaError. Under ``shoal serve`` every instance resumes the unfinished runs left by
a stopped instance.

The contract: actions and compensations may run more than once for one run (a crash
after the work but before its progress was stored repeats it), so they must be
idempotent; ``ctx.idempotency_key`` (``saga/id/step``) names the step of the run,
stable across retries and instances, for the called service to recognise a repeat.

Records live in the service's state under ``_shoal/saga/<saga>/<id>`` (status:
running, compensating, completed, compensated, failed; per-step results, the error,
attempts, the owner instance and its lease).
"""

from __future__ import annotations

from shoal.exceptions import SagaError as SagaError
from shoal.saga._model import SagaContext as SagaContext
from shoal.saga._model import SagaOutcome as SagaOutcome
from shoal.saga._model import SagaRecord as SagaRecord
from shoal.saga._model import Step as Step
from shoal.saga._model import StepFailure as StepFailure
from shoal.saga._registry import registered as registered
from shoal.saga._saga import Saga as Saga

__all__ = [
    "Saga",
    "SagaContext",
    "SagaError",
    "SagaOutcome",
    "SagaRecord",
    "Step",
    "StepFailure",
    "registered",
]
