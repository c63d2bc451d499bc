"""``shoal validate``: one line when valid, every problem and a count when not, JSON on request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.cli import app

VALID = """\
app: shop
services:
  catalog:
    asgi: catalog.main:app
    replicas: 2
  orders:
    asgi: orders.main:app
  legacy-billing:
    command: ["node", "server.js"]
    port: 9000
  worker:
    command: python -m worker
    replicas: 2
gateway:
  routes:
    - {prefix: /api/catalog, service: catalog}
"""

INVALID = """\
app: shop
services:
  orders:
    asgi: orders.main:app
    replcas: 2
gateway:
  routes:
    - {prefix: /api/billing, service: billing}
"""

INVALID_LINES = [
    "examples/shop/shoal.yaml:5:5: services.orders.replcas: unknown key (did you mean 'replicas'?)",
    "examples/shop/shoal.yaml:8:39: gateway.routes[0].service: unknown service 'billing' "
    "(services: orders)",
    "2 problems in examples/shop/shoal.yaml",
]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``examples/shop/`` under a temporary working directory."""
    directory = tmp_path / "examples" / "shop"
    directory.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return directory


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_valid_manifest_prints_one_line(shop: Path) -> None:
    (shop / "shoal.yaml").write_text(VALID)
    assert invoke("examples/shop") == (
        0,
        "examples/shop/shoal.yaml: valid (app 'shop', 4 services, 6 instances)\n",
        "",
    )


def test_directory_defaults_to_the_current_one(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (shop / "shoal.yaml").write_text("app: shop\nservices:\n  orders: {asgi: orders.main:app}\n")
    monkeypatch.chdir(shop)
    assert invoke() == (0, "shoal.yaml: valid (app 'shop', 1 service, 1 instance)\n", "")


def test_a_file_path_is_accepted(shop: Path) -> None:
    (shop / "prod.yaml").write_text(VALID)
    code, out, _ = invoke("examples/shop/prod.yaml")
    assert (code, out) == (
        0,
        "examples/shop/prod.yaml: valid (app 'shop', 4 services, 6 instances)\n",
    )


def test_invalid_manifest_prints_every_problem_and_a_count(shop: Path) -> None:
    (shop / "shoal.yaml").write_text(INVALID)
    code, out, err = invoke("examples/shop")
    assert (code, out) == (1, "")
    assert err.splitlines() == INVALID_LINES


def test_missing_manifest(shop: Path) -> None:
    code, out, err = invoke("examples/shop")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "examples/shop/shoal.yaml: no such file (create shoal.yaml here, "
        "or point at the directory that holds the app's shoal.yaml)",
        "1 problem in examples/shop/shoal.yaml",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "app: [\n",
        "- a\n",
        "a: 1\na: 2\n",
        "app: !!binary xx\n",
        "app: \x00\n",
        "x: 2024-13-01\n",
    ],
)
def test_no_traceback_on_bad_input(shop: Path, text: str) -> None:
    (shop / "shoal.yaml").write_text(text)
    code, out, err = invoke("examples/shop")
    assert (code, out) == (1, "")
    assert err.startswith("examples/shop/shoal.yaml")
    assert "Traceback" not in err


def test_json_when_invalid(shop: Path) -> None:
    (shop / "shoal.yaml").write_text(INVALID)
    code, out, err = invoke("examples/shop", "--json")
    assert (code, err) == (1, "")
    assert json.loads(out) == {
        "valid": False,
        "path": "examples/shop/shoal.yaml",
        "problems": [
            {
                "path": "examples/shop/shoal.yaml",
                "line": 5,
                "column": 5,
                "field": "services.orders.replcas",
                "message": "unknown key (did you mean 'replicas'?)",
            },
            {
                "path": "examples/shop/shoal.yaml",
                "line": 8,
                "column": 39,
                "field": "gateway.routes[0].service",
                "message": "unknown service 'billing' (services: orders)",
            },
        ],
    }


def test_json_when_valid(shop: Path) -> None:
    (shop / "shoal.yaml").write_text(VALID)
    code, out, err = invoke("--json", "examples/shop")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "valid": True,
        "path": "examples/shop/shoal.yaml",
        "problems": [],
        "app": "shop",
        "services": 4,
        "instances": 6,
    }


def test_json_when_missing_has_no_position(shop: Path) -> None:
    code, out, _ = invoke("--json", "nowhere")
    assert code == 1
    [problem] = json.loads(out)["problems"]
    assert problem == {
        "path": "nowhere",
        "line": None,
        "column": None,
        "field": "",
        "message": "no such file or directory",
    }


def test_help() -> None:
    result = CliRunner().invoke(app, ["validate", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout


def shoal_script() -> str:
    found = shutil.which("shoal") or str(Path(sys.executable).parent / "shoal")
    if not os.access(found, os.X_OK):
        pytest.fail(f"the shoal console script is not installed next to {sys.executable}")
    return found


def test_real_process_reports_problems_without_traceback(shop: Path) -> None:
    (shop / "shoal.yaml").write_text(INVALID)
    done = subprocess.run(
        [shoal_script(), "validate", "examples/shop"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == INVALID_LINES


def test_real_process_accepts_a_valid_manifest(shop: Path) -> None:
    (shop / "shoal.yaml").write_text(VALID)
    done = subprocess.run(
        [shoal_script(), "validate", "examples/shop"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "examples/shop/shoal.yaml: valid (app 'shop', 4 services, 6 instances)\n"
