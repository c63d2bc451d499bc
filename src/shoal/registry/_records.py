"""What the registry stores and what a watch delivers. No I/O here."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Delete", "InstanceRecord", "InstanceState", "Put", "RegistryUpdate", "Synced"]

InstanceState = Literal["starting", "ready", "draining"]


class InstanceRecord(BaseModel):
    """One running instance of a service, as registered in the backbone."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    app: str
    service: str
    instance: str
    version: str = "v1"
    host: str
    port: int = Field(ge=1, le=65535)
    labels: dict[str, str] = Field(default_factory=dict)
    state: InstanceState = "starting"
    started_at: float
    """Wall-clock start time (seconds since the epoch)."""
    pid: int | None = None
    ttl: float = Field(default=2.5, gt=0)
    """Seconds without a heartbeat after which watchers drop the instance."""
    tls: bool = False
    """It serves mTLS with an SVID of its service (else plaintext: development, commands)."""
    trust: int = 0
    """The trust bundle generation it has applied (rotation waits on it)."""
    issuer: str = ""
    """Fingerprint of the intermediate that signed its current SVID."""

    @property
    def key(self) -> str:
        return f"{self.service}.{self.instance}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def identity(self) -> str:
        """The SPIFFE ID it must prove over mTLS; "" if it serves plaintext."""
        return f"spiffe://{self.app}.shoal/svc/{self.service}" if self.tls else ""


@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    """An instance was registered or heartbeated; ``age`` is seconds since it was written."""

    record: InstanceRecord
    age: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    """An instance deregistered (or its entry was removed)."""

    service: str
    instance: str


@dataclasses.dataclass(frozen=True, slots=True)
class Synced:
    """Every entry that existed when the watch began has been delivered."""


RegistryUpdate = Put | Delete | Synced
