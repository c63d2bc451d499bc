"""``state:`` in shoal.yaml: which engine holds each service's state, with located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_manifest_errors import problems_in

from shoal.manifest import StateSpec, load_manifest
from shoal.supervisor._supervisor import state_env


def manifest_with(state: str) -> str:
    return f"""\
    app: shop
    services:
      orders:
        asgi: orders:app
        state: {state}
      orders-v2:
        asgi: orders:app
        service: orders
        version: v2
    """


def test_state_defaults_to_sqlite_and_version_entries_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = manifest_with("{backend: redis, url: 'redis://127.0.0.1:6379/3'}")
    (tmp_path / "shoal.yaml").write_text(textwrap.dedent(text))
    manifest = load_manifest(tmp_path)
    assert manifest.services["orders"].state == StateSpec(
        backend="redis", url="redis://127.0.0.1:6379/3"
    )
    assert manifest.services["orders-v2"].state == StateSpec()  # its own entry: the default
    expected = {"SHOAL_STATE_BACKEND": "redis", "SHOAL_STATE_URL": "redis://127.0.0.1:6379/3"}
    assert state_env(manifest, "orders") == expected  # what every orders instance gets


def test_the_shorthand_names_a_backend(tmp_path: Path) -> None:
    (tmp_path / "shoal.yaml").write_text(textwrap.dedent(manifest_with("sqlite")))
    assert load_manifest(tmp_path).services["orders"].state.backend == "sqlite"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(
            "mongo",
            "shoal.yaml:5:12: services.orders.state: expected one of sqlite, postgres, redis, "
            "or {backend: ..., url: ...}, got 'mongo'",
            id="unknown-shorthand",
        ),
        pytest.param(
            "{backend: postgres}",
            "shoal.yaml:5:12: services.orders.state: backend postgres needs `url`, "
            "e.g. 'postgresql://user@127.0.0.1:5432/db'",
            id="postgres-without-url",
        ),
        pytest.param(
            "{backend: redis, url: 'postgresql://x/y'}",
            "shoal.yaml:5:12: services.orders.state: backend redis: url must look like "
            "'redis://127.0.0.1:6379/0'",
            id="url-of-another-engine",
        ),
        pytest.param(
            "{backend: sqlite, url: 'x'}",
            "shoal.yaml:5:12: services.orders.state: sqlite takes no url: its file is "
            "DIR/.shoal/state/<service>.db (remove `url`, or choose backend: postgres or redis)",
            id="sqlite-with-url",
        ),
        pytest.param(
            "{backend: postgress, url: 'postgresql://x/y'}",
            "shoal.yaml:5:22: services.orders.state.backend: ",
            id="misspelt-backend",
        ),
    ],
)
def test_bad_state_is_located(
    state: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = problems_in(manifest_with(state), tmp_path, monkeypatch)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems
