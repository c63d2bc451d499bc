"""Turn pydantic's validation errors into located problems in plain words."""

from __future__ import annotations

import datetime
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from shoal.manifest._models import AT_KEY, AT_VALUE, Manifest, closest
from shoal.manifest._yaml import Document, Loc, Mark, YamlProblem

__all__ = ["describe", "problems_from_errors"]

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list",
    "tuple_type": "a list",
}


def describe(value: object) -> str:
    """``value`` as a user wrote it in YAML, for "got ..." in messages."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``... | None`` down to the type underneath."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def _model_at(loc: Sequence[object]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc``, found by walking field annotations."""
    annotation: Any = Manifest
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return None
            annotation = info.annotation
        elif get_origin(annotation) in (dict, list, tuple):
            annotation = [a for a in get_args(annotation) if a is not Ellipsis][-1]
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unknown_key(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    valid = sorted(model.model_fields)
    match = closest(str(loc[-1]), valid)
    if match is not None:
        return f"unknown key (did you mean {match!r}?)"
    return f"unknown key (valid keys: {', '.join(valid)})"


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    if kind in (AT_KEY, AT_VALUE):
        return error["msg"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "invalid_key":
        return f"keys must be strings, got {describe(error['input'])}"
    value = error["input"]
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {describe(value)}"
        if kind == "string_type" and isinstance(value, int | float | datetime.date):
            written = value.isoformat() if isinstance(value, datetime.date) else describe(value)
            message += f' (put it in quotes: "{written}")'
        return message
    text = error["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
    return f"{text[:1].lower()}{text[1:]}, got {describe(value)}"


def _locate(doc: Document, loc: Loc, *, at_key: bool) -> Mark:
    marks = doc.keys if at_key else doc.values
    if loc in marks:
        return marks[loc]
    for depth in range(len(loc) - 1, 0, -1):  # the nearest enclosing key that was written
        if loc[:depth] in doc.keys:
            return doc.keys[loc[:depth]]
    return doc.root


def _problem(doc: Document, error: ErrorDetails) -> YamlProblem:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = _message(error, loc)
    if loc and loc[-1] == "[key]":  # the name of a mapping entry is wrong
        loc = loc[:-1]
        return YamlProblem(_locate(doc, loc, at_key=True), doc.field_path(loc), message)
    if kind == "missing":
        mark = _locate(doc, loc[:-1], at_key=True) if len(loc) > 1 else doc.root
        return YamlProblem(mark, doc.field_path(loc), message)
    # An empty value has no position of its own: point at its key.
    at_key = kind in (AT_KEY, "extra_forbidden", "invalid_key") or error["input"] is None
    return YamlProblem(_locate(doc, loc, at_key=at_key), doc.field_path(loc), message)


def problems_from_errors(doc: Document, errors: Sequence[ErrorDetails]) -> list[YamlProblem]:
    """One located problem per pydantic error."""
    return [_problem(doc, error) for error in errors]
