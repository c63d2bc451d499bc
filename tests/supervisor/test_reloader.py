"""Re-reading shoal.yaml live: what is applied, what is only reported, what is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shoal.exceptions import BackboneError, ManifestError
from shoal.manifest import Manifest, ServicePolicy, load_manifest
from shoal.supervisor._reloader import ManifestReloader, not_applied

BASE = """\
app: shop
services:
  catalog:
    asgi: catalog:app
  orders:
    asgi: orders:app
    replicas: 2
"""


@dataclass
class FakePublisher:
    stored: dict[str, bytes] = field(default_factory=dict)
    published: asyncio.Event = field(default_factory=asyncio.Event)
    down: bool = False

    async def publish(self, policies: Mapping[str, ServicePolicy]) -> list[str]:
        if self.down:
            raise BackboneError("cannot reach NATS")
        wanted = {name: policy.to_json() for name, policy in policies.items()}
        changed = sorted(
            {n for n, data in wanted.items() if self.stored.get(n) != data}
            | (self.stored.keys() - wanted.keys())
        )
        self.stored = wanted
        self.published.set()
        return changed


@dataclass
class Harness:
    path: Path
    publisher: FakePublisher
    reloader: ManifestReloader
    said: list[str]

    def write(self, text: str) -> None:
        self.path.write_text(text)

    async def next_publish(self, timeout: float = 2.0) -> None:
        self.publisher.published.clear()
        await asyncio.wait_for(self.publisher.published.wait(), timeout)


@pytest.fixture
async def harness(tmp_path: Path) -> Harness:
    path = tmp_path / "shoal.yaml"
    path.write_text(BASE)
    manifest = load_manifest(tmp_path)
    publisher = FakePublisher()
    await publisher.publish(manifest.policies())
    said: list[str] = []
    reloader = ManifestReloader(manifest, publisher, said.append, interval=0.01)
    return Harness(path, publisher, reloader, said)


@pytest.fixture
async def watching(harness: Harness) -> AsyncIterator[Harness]:
    """The harness, with the file watch running."""
    task = asyncio.create_task(harness.reloader.run())
    try:
        yield harness
    finally:
        task.cancel()
        await asyncio.wait({task})


def manifest_of(tmp_path: Path, text: str) -> Manifest:
    (tmp_path / "shoal.yaml").write_text(text)
    return load_manifest(tmp_path)


async def test_apply_publishes_the_changed_policies_and_says_which(harness: Harness) -> None:
    harness.write(BASE.replace("catalog:app\n", "catalog:app\n    timeout: 2s\n"))
    result = await harness.reloader.apply()
    assert result.changed == ["catalog"]
    assert result.not_applied == []
    assert ServicePolicy.from_json(harness.publisher.stored["catalog"]).timeout == 2.0
    assert harness.said[-1] == "applied traffic policy: catalog"


async def test_apply_of_an_unchanged_manifest_changes_nothing(harness: Harness) -> None:
    result = await harness.reloader.apply()
    assert (result.changed, result.not_applied) == ([], [])
    assert harness.said[-1].endswith("no traffic policy changed")


async def test_invalid_manifest_is_reported_and_keeps_the_policy_in_force(
    harness: Harness,
) -> None:
    before = dict(harness.publisher.stored)
    harness.write(BASE.replace("catalog:app\n", "catalog:app\n    timeout: soon\n"))
    with pytest.raises(ManifestError) as caught:
        await harness.reloader.apply()
    assert harness.publisher.stored == before
    problem = str(caught.value.problems[0])
    assert f"{harness.path}:5:14: services.catalog.timeout:" in problem
    assert harness.said[0] == problem
    assert "nothing applied; the traffic policy in force stays" in harness.said[-1]


async def test_file_change_is_applied_without_being_asked(watching: Harness) -> None:
    harness = watching
    harness.write(BASE.replace("orders:app\n", "orders:app\n    retries: {attempts: 1}\n"))
    await harness.next_publish()
    assert ServicePolicy.from_json(harness.publisher.stored["orders"]).retries.attempts == 1
    assert "applied traffic policy: orders" in harness.said


async def test_file_watch_retries_while_nats_is_away(watching: Harness) -> None:
    harness = watching
    harness.publisher.down = True
    harness.write(BASE.replace("catalog:app\n", "catalog:app\n    timeout: 3s\n"))
    async with asyncio.timeout(2):
        while not any("could not apply" in line for line in harness.said):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    harness.publisher.down = False
    await harness.next_publish()
    assert ServicePolicy.from_json(harness.publisher.stored["catalog"]).timeout == 3.0
    assert sum("could not apply" in line for line in harness.said) == 1


def test_changes_other_than_policy_are_listed_with_the_command_that_applies_them(
    tmp_path: Path,
) -> None:
    old = manifest_of(tmp_path, BASE)
    new = manifest_of(
        tmp_path,
        "app: shop\nservices:\n  catalog:\n    asgi: catalog:main\n"
        "  orders:\n    asgi: orders:app\n    replicas: 3\n"
        "  payments:\n    asgi: payments:app\n",
    )
    assert not_applied(old, new) == [
        "catalog: asgi changed: run `shoal restart catalog`",
        "orders: replicas 2 -> 3: run `shoal scale orders=3`",
        "payments: new service, not started: run `shoal scale payments=1`",
    ]
    assert (
        not_applied(new, old)[-1] == "payments: removed, still running: restart the app to stop it"
    )
