"""Import ``MODULE:APP`` with the app directory first on the import path."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from shoal.exceptions import AppImportError
from shoal.types import ASGIApp

__all__ = ["import_app"]


def import_app(target: str, app_dir: Path) -> ASGIApp:
    """Return the ASGI app named by ``target`` ("package.module:attribute")."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AppImportError(
            f"{target!r} is not an import path of the form MODULE:APP (e.g. catalog.main:app)"
        )
    root = str(app_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing == module_name or module_name.startswith(missing + "."):
            raise AppImportError(
                f"cannot import {target!r}: no module named {missing!r} under {app_dir} "
                "(check the module path, or run from the app's directory / set SHOAL_APP_DIR)"
            ) from exc
        raise AppImportError(
            f"cannot import {target!r}: module {module_name!r} imports {missing!r}, "
            "which is not installed"
        ) from exc
    except Exception as exc:
        raise AppImportError(
            f"cannot import {target!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError(
                f"cannot import {target!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise AppImportError(f"{target!r} is not an ASGI application (it is not callable)")
    if inspect.isclass(obj):
        raise AppImportError(f"{target!r} is a class, not an ASGI application instance")
    return obj
