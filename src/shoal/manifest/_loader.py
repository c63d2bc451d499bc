"""Find, read and validate ``shoal.yaml``, reporting every problem with its location."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from shoal.exceptions import ManifestError, ManifestProblem
from shoal.manifest._models import MANIFEST_FILENAME, Manifest
from shoal.manifest._problems import describe, problems_from_errors
from shoal.manifest._yaml import YamlProblem, read_yaml

__all__ = ["find_manifest", "load_manifest"]


def find_manifest(path: str | os.PathLike[str]) -> Path:
    """The manifest file for ``path``: ``path/shoal.yaml`` for a directory, else ``path``.

    The result is relative when ``path`` is, so it reads the way the user typed it.
    """
    given = Path(path)
    return given / MANIFEST_FILENAME if given.is_dir() else given


def _read_text(file: Path, shown: str) -> str:
    def fail(message: str) -> ManifestError:
        return ManifestError([ManifestProblem(shown, 0, 0, "", message)])

    try:
        return file.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        if file.name == MANIFEST_FILENAME and file.parent.is_dir():
            message = (
                f"no such file (create {MANIFEST_FILENAME} here, "
                f"or point at the directory that holds the app's {MANIFEST_FILENAME})"
            )
        else:
            message = "no such file or directory"
        raise fail(message) from exc
    except IsADirectoryError as exc:
        raise fail("is a directory, not a manifest file") from exc
    except UnicodeDecodeError as exc:
        raise fail(f"cannot read: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from exc


def _to_problems(shown: str, found: list[YamlProblem]) -> list[ManifestProblem]:
    ordered = sorted(found, key=lambda p: (p.mark.line, p.mark.column))
    return [ManifestProblem(shown, p.mark.line, p.mark.column, p.field, p.message) for p in ordered]


def _not_yet_reported(found: list[YamlProblem], more: list[YamlProblem]) -> list[YamlProblem]:
    """``more`` without problems about a field already reported (e.g. for its YAML tag)."""
    fields = {p.field for p in found if p.field}

    def inside(name: str) -> bool:
        return any(name == f or name.startswith((f"{f}.", f"{f}[")) for f in fields)

    return [p for p in more if not inside(p.field)]


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate the manifest at ``path`` (a directory or the file itself).

    Raises :class:`~shoal.exceptions.ManifestError` listing every problem found,
    each as ``PATH:LINE:COL: field: message``.
    """
    file = find_manifest(path)
    shown = str(file)
    doc, found = read_yaml(_read_text(file, shown))
    if doc is None:
        raise ManifestError(_to_problems(shown, found))
    if not isinstance(doc.data, dict):
        message = (
            "the manifest must be a mapping of keys (app:, services:, gateway:), "
            f"got {describe(doc.data)}"
        )
        raise ManifestError(_to_problems(shown, [*found, YamlProblem(doc.root, "", message)]))
    try:
        manifest = Manifest.model_validate(doc.data, context={"path": file})
    except ValidationError as exc:
        found += _not_yet_reported(found, problems_from_errors(doc, exc.errors()))
        raise ManifestError(_to_problems(shown, found)) from exc
    if found:
        raise ManifestError(_to_problems(shown, found))
    return manifest
