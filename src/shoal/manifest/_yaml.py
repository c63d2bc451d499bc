"""Read YAML text into plain data plus the line and column of every key and value.

ruamel.yaml's round-trip loader keeps ``.lc`` marks on mappings and sequences;
this module turns its tree into plain ``dict``/``list``/scalars (what pydantic
validates) and records, per location, where the key and the value were written.
Syntax errors, duplicate keys and unsupported tags become problems.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.scalarint import ScalarInt

__all__ = ["Document", "Mark", "YamlProblem", "read_yaml"]

Loc = tuple[object, ...]

# A manifest is small; this bounds the work an alias bomb can cause.
_MAX_NODES = 100_000
_CORE_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _CORE_TAG + "merge"
_HINTS = {"'\\t'": " (indent with spaces, not tabs)"}


class Mark(NamedTuple):
    """A 1-based line and column; line 0 means "no position"."""

    line: int
    column: int


class YamlProblem(NamedTuple):
    mark: Mark
    field: str
    message: str


@dataclass
class Document:
    """Plain data read from YAML and where each part of it was written."""

    data: object
    root: Mark
    keys: dict[Loc, Mark] = field(default_factory=dict)
    values: dict[Loc, Mark] = field(default_factory=dict)
    sequences: set[Loc] = field(default_factory=set)

    def field_path(self, loc: Sequence[object]) -> str:
        """Like :func:`field_path`, telling list indexes from integer keys."""
        return field_path(loc, lambda depth: tuple(loc[:depth]) in self.sequences)


class _TooLargeError(Exception):
    pass


def field_path(loc: Sequence[object], in_list: Callable[[int], bool] | None = None) -> str:
    """``services.catalog.env`` for mapping keys, ``[i]`` for list indexes.

    ``in_list(depth)`` says whether ``loc[depth]`` indexes a list; without it
    every integer is taken for an index.
    """
    out = ""
    for depth, part in enumerate(loc):
        is_int = isinstance(part, int) and not isinstance(part, bool)
        if is_int and (in_list is None or in_list(depth)):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True  # reported by _duplicates, with every location
    return yaml


def _error_problem(exc: YAMLError, text: str) -> YamlProblem:
    if isinstance(exc, ReaderError):
        before = text[: exc.position]
        mark = Mark(before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"YAML syntax error: unacceptable character #x{char:04x}: {exc.reason}"
        return YamlProblem(mark, "", message)
    if not isinstance(exc, MarkedYAMLError):
        return YamlProblem(Mark(0, 0), "", f"YAML error: {exc}")
    where = exc.problem_mark or exc.context_mark
    mark = Mark(where.line + 1, where.column + 1) if where is not None else Mark(1, 1)
    problem = exc.problem or exc.context or str(exc)
    message = f"YAML syntax error: {problem}"
    context = exc.context_mark
    if exc.problem and exc.context and context is not None and context.line != mark.line - 1:
        message += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
    hint = next((h for token, h in _HINTS.items() if token in problem), "")
    return YamlProblem(mark, "", message + hint)


def _node_mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _duplicates(root: Node) -> list[YamlProblem]:
    problems: list[YamlProblem] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first: dict[tuple[str, str], Node] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and str(key.tag) != _MERGE_TAG:
                    ident = (str(key.tag), str(key.value))
                    if ident in first:
                        line = first[ident].start_mark.line + 1
                        message = f"duplicate key (first defined at line {line})"
                        problems.append(
                            YamlProblem(_node_mark(key), field_path((*loc, key.value)), message)
                        )
                        continue
                    first[ident] = key
                stack.append((value, (*loc, key.value if isinstance(key, ScalarNode) else "?")))
    return problems


def _lc_mark(container: Any, kind: str, key: object) -> Mark | None:
    """Where ``key`` (or list index) of a ruamel container was written, if recorded."""
    for source in (container, *getattr(container, "merge", ())):
        lc = getattr(source, "lc", None)
        if lc is not None and key in (lc.data or {}):
            line, column = getattr(lc, kind)(key)
            return Mark(line + 1, column + 1)
    return None


@dataclass
class _Converter:
    doc: Document
    problems: list[YamlProblem]
    count: int = 0

    def convert(self, obj: object, loc: Loc, parents: frozenset[int]) -> object:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooLargeError
        if isinstance(obj, Mapping | list):
            self._check_tag(obj, loc)
            if id(obj) in parents:
                self._add(loc, "a YAML alias refers to itself")
                return None
            inner = parents | {id(obj)}
            if isinstance(obj, Mapping):
                return self._mapping(obj, loc, inner)
            return self._sequence(obj, loc, inner)
        return self._scalar(obj, loc)

    def _mapping(self, obj: Mapping[object, object], loc: Loc, parents: frozenset[int]) -> object:
        out: dict[object, object] = {}
        for raw_key, value in obj.items():
            key = self._key(raw_key)
            here = (*loc, key)
            key_mark = _lc_mark(obj, "key", raw_key)
            value_mark = _lc_mark(obj, "value", raw_key)
            if key_mark is not None:
                self.doc.keys[here] = key_mark
            if value_mark is not None:
                self.doc.values[here] = value_mark
            out[key] = self.convert(value, here, parents)
        return out

    def _sequence(self, obj: list[object], loc: Loc, parents: frozenset[int]) -> object:
        out: list[object] = []
        self.doc.sequences.add(loc)
        for index, value in enumerate(obj):
            here = (*loc, index)
            mark = _lc_mark(obj, "item", index)
            if mark is not None:
                self.doc.keys[here] = self.doc.values[here] = mark
            out.append(self.convert(value, here, parents))
        return out

    def _key(self, key: object) -> object:
        if isinstance(key, tuple):  # a complex key, e.g. ``? [a, b]``
            return tuple(self._scalar(part, ()) for part in key)
        return self._scalar(key, ())

    def _scalar(self, obj: object, loc: Loc) -> object:
        if isinstance(obj, ScalarBoolean):
            return bool(obj)
        if isinstance(obj, bool | datetime.date | None):
            return obj
        if isinstance(obj, ScalarInt | int):
            return int(obj)
        if isinstance(obj, ScalarFloat | float):
            return float(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, TaggedScalar):
            if str(obj.tag) != _CORE_TAG + "str":
                self._add(loc, f"unsupported YAML tag '{obj.tag}'")
            return str(obj.value)
        return obj

    def _check_tag(self, obj: object, loc: Loc) -> None:
        tag = getattr(getattr(obj, "tag", None), "value", None)
        if isinstance(tag, str) and not tag.startswith(_CORE_TAG):
            self._add(loc, f"unsupported YAML tag '{tag}'")

    def _add(self, loc: Loc, message: str) -> None:
        mark = self.doc.values.get(loc, self.doc.root)
        self.problems.append(YamlProblem(mark, self.doc.field_path(loc), message))


def read_yaml(text: str) -> tuple[Document | None, list[YamlProblem]]:
    """Parse ``text``; the document is None when nothing could be read from it."""
    try:
        node = _yaml().compose(text)
    except YAMLError as exc:
        return None, [_error_problem(exc, text)]
    if node is None:
        message = "the manifest is empty (it needs at least 'app' and 'services')"
        return None, [YamlProblem(Mark(1, 1), "", message)]
    problems = _duplicates(node)
    try:
        loaded = _yaml().load(text)
    except YAMLError as exc:
        return None, [*problems, _error_problem(exc, text)]
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-02-30
        return None, [*problems, YamlProblem(Mark(0, 0), "", f"YAML error: {exc}")]
    doc = Document(data=None, root=_node_mark(node))
    converter = _Converter(doc, problems)
    try:
        doc.data = converter.convert(loaded, (), frozenset())
    except _TooLargeError:
        message = f"the manifest is too large (more than {_MAX_NODES} values after aliases)"
        return None, [*problems, YamlProblem(doc.root, "", message)]
    return doc, problems
