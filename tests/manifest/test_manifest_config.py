"""``services.<name>.config:``: JSON values under valid keys, each problem where it is written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shoal.config._admin import manifest_config
from shoal.exceptions import ManifestError
from shoal.manifest import load_manifest


def _write(directory: Path, text: str) -> Path:
    (directory / "shoal.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def _problems(directory: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(_write(directory, text))
    with pytest.raises(ManifestError) as caught:
        load_manifest(".")
    return [str(problem) for problem in caught.value.problems]


def test_config_values_of_every_json_kind_load(tmp_path: Path) -> None:
    manifest = load_manifest(
        _write(
            tmp_path,
            """\
            app: shop
            services:
              catalog:
                asgi: catalog.main:app
                config:
                  page_size: 20
                  ratio: 0.5
                  greeting: hello
                  beta: false
                  tags: [a, b]
                  limits: {read: 10, write: 2}
              catalog-v2:
                asgi: catalog.v2:app
                service: catalog
                version: v2
            """,
        )
    )
    assert manifest.services["catalog"].config == {
        "page_size": 20,
        "ratio": 0.5,
        "greeting": "hello",
        "beta": False,
        "tags": ["a", "b"],
        "limits": {"read": 10, "write": 2},
    }
    assert manifest_config(manifest) == {"catalog": manifest.services["catalog"].config}


def test_bad_config_keys_and_values_are_reported_where_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _problems(
        tmp_path,
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            config:
              page size: 20
              released: 2024-01-01
              timeout:
              ok: 1
          catalog-v2:
            asgi: catalog.v2:app
            service: catalog
            version: v2
            config: {page_size: 5}
          orders:
            asgi: orders.main:app
            confg: {a: 1}
        """,
        monkeypatch,
    )
    assert lines == [
        "shoal.yaml:6:7: services.catalog.config.page size: 'page size' is not a valid "
        "config key name: use letters, digits, '_' and '-', 1 to 64 characters "
        "(try 'page_size')",
        "shoal.yaml:7:17: services.catalog.config.released: expected a string, number, "
        "true/false, list or map, got a date (put it in quotes to make it a string)",
        "shoal.yaml:8:7: services.catalog.config.timeout: an empty value: write a value "
        '("" for an empty string), or leave the key out',
        "shoal.yaml:14:5: services.catalog-v2.config: config for service 'catalog' goes under "
        "its own entry 'catalog': version entries share their service's config",
        "shoal.yaml:17:5: services.orders.confg: unknown key (did you mean 'config'?)",
    ]
