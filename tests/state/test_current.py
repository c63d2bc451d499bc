"""``shoal.state()``: the store of this process's service, chosen by ``state:`` in shoal.yaml."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import shoal
from servers import POSTGRES_DSN, drop_postgres_app, new_app, require_postgres
from shoal.exceptions import StateError
from shoal.state import StateTarget, open_state
from shoal.state import _current as current


@pytest.fixture
async def fresh() -> AsyncIterator[None]:
    await current.close_state()
    yield
    await current.close_state()


def service_env(monkeypatch: pytest.MonkeyPatch, app_dir: Path, **extra: str) -> None:
    monkeypatch.setenv("SHOAL_APP", "unit")
    monkeypatch.setenv("SHOAL_SERVICE", "orders")
    monkeypatch.setenv("SHOAL_APP_DIR", str(app_dir))
    for name in (current.BACKEND_ENV, current.URL_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("fresh")
async def test_state_is_the_services_sqlite_file_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service_env(monkeypatch, tmp_path)
    store = shoal.state()
    assert shoal.state() is store
    assert not current.state_opened()
    assert not (tmp_path / ".shoal" / "state").exists()  # nothing opened before first use
    await store.set("k", {"n": 1})
    assert current.state_opened()
    assert (tmp_path / ".shoal" / "state" / "orders.db").is_file()
    assert store.backend.where.startswith(str(tmp_path / ".shoal" / "state" / "orders.db"))
    await current.close_state()
    again = shoal.state()
    assert again is not store
    assert await again.get("k") == {"n": 1}


@pytest.mark.usefixtures("fresh")
async def test_state_outside_a_service_says_how_to_run_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_SERVICE", raising=False)
    with pytest.raises(StateError, match="shoal up"):
        shoal.state()


@pytest.mark.usefixtures("fresh")
async def test_an_unset_variable_in_the_url_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service_env(
        monkeypatch,
        tmp_path,
        SHOAL_STATE_BACKEND="postgres",
        SHOAL_STATE_URL="postgresql://app:${SHOAL_TEST_NO_SUCH_VAR}@127.0.0.1/test",
    )
    monkeypatch.delenv("SHOAL_TEST_NO_SUCH_VAR", raising=False)
    store = shoal.state()
    with pytest.raises(StateError, match=r"\$\{SHOAL_TEST_NO_SUCH_VAR\}.*not set"):
        await store.get("k")
    assert not current.state_opened()  # a failed open is tried again on the next operation


async def test_an_unknown_backend_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_SERVICE", "orders")
    monkeypatch.setenv(current.BACKEND_ENV, "mongo")
    with pytest.raises(StateError, match="sqlite, postgres or redis"):
        StateTarget.from_env()


def test_url_variables_expand_from_the_environment() -> None:
    target = StateTarget("a", "s", Path("."), "redis", "redis://:${PW}@h:${PORT}/0")
    assert target.expanded_url({"PW": "p", "PORT": "6380"}) == "redis://:p@h:6380/0"


@pytest.mark.usefixtures("fresh")
async def test_state_reaches_postgres_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await require_postgres()
    app = new_app()
    service_env(
        monkeypatch,
        tmp_path,
        SHOAL_APP=app,
        SHOAL_STATE_BACKEND="postgres",
        SHOAL_STATE_URL=POSTGRES_DSN.replace("127.0.0.1", "${SHOAL_TEST_PGHOST}"),
        SHOAL_TEST_PGHOST="127.0.0.1",
    )
    try:
        await shoal.state().set("order:1", "new")
        assert shoal.state().backend.name == "postgres"
        seen = await open_state(StateTarget(app, "orders", tmp_path, "postgres", POSTGRES_DSN))
        try:
            assert await seen.get("order:1") == "new"
        finally:
            await seen.aclose()
    finally:
        await current.close_state()
        await drop_postgres_app(app)
