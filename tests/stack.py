"""compose.yaml and the backend configs, loaded once for the tests that cross-check them."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import yaml

from shop import REPO

COMPOSE_PATH = REPO / "compose.yaml"
ENV_REFERENCE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return load("compose.yaml")


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def load(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / relative).read_text())
    return loaded


def env_default(reference: str) -> str:
    """The value a `${VAR:-default}` string takes when VAR is unset."""
    return ENV_REFERENCE.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", reference)


def bind_mounts() -> list[tuple[str, str, str]]:
    """(service, source, target) of every bind mount (a source starting with ./)."""
    mounts = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                mounts.append((name, source, target))
    return mounts


def container_path(service: str, path: str) -> str | None:
    """The repo file a bind mount puts at `path` inside `service`, or None."""
    for name, source, target in bind_mounts():
        if name == service and (path == target or path.startswith(target.rstrip("/") + "/")):
            return source[2:] + path[len(target) :]
    return None


DATASOURCES_FILE = "grafana/provisioning/datasources/datasources.yaml"


def datasources() -> dict[str, dict[str, Any]]:
    """Grafana's provisioned data sources by uid."""
    return {ds["uid"]: ds for ds in load(DATASOURCES_FILE)["datasources"]}
