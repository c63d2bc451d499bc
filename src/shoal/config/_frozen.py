"""Config values an app cannot change by accident: maps and lists that refuse writes.

They are still a ``dict`` and a ``list`` (``json.dumps``, pydantic and ``==`` treat them
as such); ``copy.copy``/``copy.deepcopy`` give plain, writable ones.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["FrozenList", "FrozenMap", "freeze", "thaw"]

_READ_ONLY = "config values are read-only; change them with `shoal config set`"


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(_READ_ONLY)


class FrozenMap(dict[str, Any]):
    """A ``dict`` whose every write raises ``TypeError``."""

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __deepcopy__(self, memo: object) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (thaw(self),)


class FrozenList(list[Any]):
    """A ``list`` whose every write raises ``TypeError``."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __copy__(self) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __deepcopy__(self, memo: object) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return list, (thaw(self),)


def freeze(value: Any) -> Any:
    """``value`` (decoded JSON) with every map and list read-only, all the way down."""
    if isinstance(value, dict):
        return FrozenMap({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, writable copy of ``value``."""
    if isinstance(value, dict):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list):
        return [thaw(item) for item in value]
    return value
