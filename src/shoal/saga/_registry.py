"""Every :class:`~shoal.saga.Saga` created in this process, by name, for resuming."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.exceptions import SagaError

if TYPE_CHECKING:
    from shoal.saga._saga import Saga

__all__ = ["register", "registered", "unregister"]

_sagas: dict[str, Saga] = {}


def register(saga: Saga) -> None:
    """Remember ``saga``; a second saga of the same name must have the same steps (it
    is then the same saga, e.g. seen by a test as another instance), else SagaError."""
    known = _sagas.get(saga.name)
    if known is None:
        _sagas[saga.name] = saga
        return
    steps = [s.name for s in saga.steps]
    if [s.name for s in known.steps] != steps:
        raise SagaError(
            f"saga {saga.name!r} is already defined in this process with steps "
            f"{[s.name for s in known.steps]}, not {steps}; give one of them another name"
        )


def registered() -> list[Saga]:
    """The sagas created in this process (the first of each name)."""
    return list(_sagas.values())


def unregister(name: str) -> None:
    """Forget the saga ``name`` (for tests that define sagas of their own)."""
    _sagas.pop(name, None)
