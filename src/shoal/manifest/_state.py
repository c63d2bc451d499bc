"""``services.<name>.state``: which engine holds a service's state (``shoal.state()``).

    state: sqlite                                   # the default: DIR/.shoal/state/<service>.db
    state: {backend: postgres, url: "postgresql://app@127.0.0.1:5432/shop"}
    state: {backend: redis, url: "redis://127.0.0.1:6379/0"}

A URL may name environment variables as ``${NAME}`` (e.g. a password), expanded in the
instance's own environment when the store opens, so no secret need be written here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictStr, model_validator

from shoal.manifest._checks import problem

__all__ = ["BACKENDS", "StateSpec"]

BACKENDS = ("sqlite", "postgres", "redis")
_SCHEMES = {"postgres": ("postgres", "postgresql"), "redis": ("redis", "rediss", "unix")}
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*)://")


def _shorthand(value: object) -> object:
    if isinstance(value, str):
        if value not in BACKENDS:
            raise problem(
                f"expected one of {', '.join(BACKENDS)}, or {{backend: ..., url: ...}}, "
                f"got {value!r}"
            )
        return {"backend": value}
    return value


class StateSpec(BaseModel):
    """Where ``shoal.state()`` keeps a service's keys: ``backend`` and, for PostgreSQL and
    Redis, the server's ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["sqlite", "postgres", "redis"] = "sqlite"
    url: StrictStr | None = None

    @model_validator(mode="after")
    def _url_fits(self) -> Self:
        if self.backend == "sqlite":
            if self.url is not None:
                raise problem(
                    "sqlite takes no url: its file is DIR/.shoal/state/<service>.db "
                    "(remove `url`, or choose backend: postgres or redis)"
                )
            return self
        example = {
            "postgres": "postgresql://user@127.0.0.1:5432/db",
            "redis": "redis://127.0.0.1:6379/0",
        }[self.backend]
        if not self.url:
            raise problem(f"backend {self.backend} needs `url`, e.g. {example!r}")
        match = _SCHEME.match(self.url)
        if match is None or match.group(1) not in _SCHEMES[self.backend]:
            raise problem(f"backend {self.backend}: url must look like {example!r}")
        return self


StateField = Annotated[StateSpec, BeforeValidator(_shorthand)]
