"""Instance settings: flags over environment over defaults, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.exceptions import BackboneError, ServeError
from shoal.runtime import RuntimeSettings

NATS = {"SHOAL_NATS_URL": "nats://127.0.0.1:4"}


def test_defaults_come_from_the_target_and_the_directory(tmp_path: Path) -> None:
    app_dir = tmp_path / "my_shop"
    app_dir.mkdir()
    settings = RuntimeSettings.from_env(
        "Catalog_API.main:app", {**NATS, "SHOAL_APP_DIR": str(app_dir)}
    )
    assert settings.service == "catalog-api"
    assert settings.app == "my-shop"
    assert settings.instance.startswith("catalog-api-")
    assert (settings.host, settings.port, settings.version) == ("127.0.0.1", 0, "v1")
    assert settings.heartbeat_interval == pytest.approx(settings.registry_ttl / 3)


def test_flags_win_over_environment_even_when_falsy(tmp_path: Path) -> None:
    env = {
        **NATS,
        "SHOAL_PORT": "8000",
        "SHOAL_SERVICE": "from-env",
        "SHOAL_APP_DIR": str(tmp_path),
    }
    settings = RuntimeSettings.from_env("x:app", env, port=0, service="from-flag")
    assert settings.port == 0
    assert settings.service == "from-flag"
    assert RuntimeSettings.from_env("x:app", env).port == 8000


def test_identity_is_exported_for_the_app(tmp_path: Path) -> None:
    env = {**NATS, "SHOAL_APP_DIR": str(tmp_path), "SHOAL_INSTANCE": "x-1"}
    identity = RuntimeSettings.from_env("x:app", env, app="shop").identity_env()
    assert identity["SHOAL_INSTANCE"] == "x-1"
    assert identity["SHOAL_APP"] == "shop"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHOAL_SERVICE": "Bad_Name"}, "service name 'Bad_Name' is not a DNS label"),
        ({"SHOAL_PORT": "eighty"}, "port must be a number, got 'eighty'"),
        ({"SHOAL_DRAIN_TIMEOUT": "-1"}, "drain timeout must not be negative"),
    ],
)
def test_bad_values_are_explained(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ServeError, match=message):
        RuntimeSettings.from_env("x:app", {**NATS, "SHOAL_APP_DIR": str(tmp_path), **env})


def test_no_backbone_anywhere_is_explained(tmp_path: Path) -> None:
    with pytest.raises(
        BackboneError, match=r"no NATS backbone for .*start the app with `shoal up`"
    ):
        RuntimeSettings.from_env("x:app", {"SHOAL_APP_DIR": str(tmp_path)})
