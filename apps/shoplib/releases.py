"""Releases: the versions a service can run, deployed at runtime through /admin/release, never by restart.

Each service declares its releases in code, oldest first: the first is what a fresh service runs. A release
changes behaviour in two ways, as faults do: `changes` are switches read per request (`setting()`), so a
canary serves a share of requests with them; `migrate`/`revert` do process-wide work (a schema change) when
the release starts serving on any track and when it stops. Which release runs where, and every change, is kept
in the service's own SQLite file, so a restart comes back on the same releases.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flask import g
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from pydantic import Field

from .api import StrictBody, matching
from .db import Database, utc_timestamp
from .errors import Problem, ValidationFailed
from .metrics import RELEASE_INFO

_log = logging.getLogger("shop.releases")
VERSION_ATTRIBUTE = "service.version"  # OpenTelemetry's semantic convention, on spans and log records
HISTORY_LIMIT = 50  # entries GET /admin/release returns; the table keeps them all


class ReleaseChange(StrictBody):
    """PUT /admin/release: a full rollout of `version`, or a canary on `canary_percent` of requests."""

    version: str = matching(r"^[0-9A-Za-z.+-]{1,40}$", "a version such as 2.5.0")
    canary_percent: int = Field(0, ge=0, le=100, description="0 or absent: full rollout")


class ReleaseNote(StrictBody):
    """The optional body of a promote or rollback, kept in the history."""

    reason: str = Field("", max_length=500)


@dataclass(frozen=True)
class Release:
    version: str
    summary: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    migrate: Callable[[], None] | None = field(default=None, compare=False)
    revert: Callable[[], None] | None = field(default=None, compare=False)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "summary": self.summary}


@dataclass(frozen=True)
class Deployment:
    """What runs now. `previous` is the stable version before the last full rollout (what rollback returns to)."""

    stable: str
    deployed_at: str  # when `stable` started serving all traffic
    previous: str | None = None
    canary: str | None = None
    canary_percent: int = 0
    canary_since: str | None = None


# The release serving the current request (set per request); outside requests, the process's stable one.
_serving: contextvars.ContextVar[str | None] = contextvars.ContextVar("shop_release_serving", default=None)
_process_stable = ""


def current_version() -> str:
    """The version serving the current request, or the stable one outside a request."""
    return _serving.get() or _process_stable


class ReleaseSpanProcessor(SpanProcessor):
    """Stamps `service.version` on every span at its start: the release serving the request it belongs to."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        version = current_version()
        if version:
            span.set_attribute(VERSION_ATTRIBUTE, version)

    def on_end(self, span: ReadableSpan) -> None:
        pass


class ReleaseLogFilter(logging.Filter):
    """Adds `service.version` to each record a handler emits (stdout JSON and OTLP alike); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        version = current_version()
        if version:
            setattr(record, VERSION_ATTRIBUTE, version)
        return True


class Releases:
    """The releases of one service, which of them serve, and the history of every change."""

    def __init__(self, service: str, releases: Sequence[Release], db: Database) -> None:
        if not releases:
            raise ValueError(f"{service} declares no release")
        self.service = service
        self.releases = {release.version: release for release in releases}
        self.db = db
        self._lock = threading.Lock()
        self._migrate()
        self.deployment = self._restore(releases[0].version)
        for version in self._serving_versions(self.deployment):
            self._run(self.releases[version].migrate)
        self._published(None, self.deployment)

    # --- per request ---

    def choose(self) -> Release:
        """The release that serves this request (the canary for its share), remembered for spans and logs."""
        deployment = self.deployment
        version = deployment.stable
        if deployment.canary and random.random() * 100 < deployment.canary_percent:
            version = deployment.canary
        _serving.set(version)
        return self.releases[version]

    @staticmethod
    def forget() -> None:
        """The request is over: spans and logs after it are the stable release's again."""
        _serving.set(None)

    # --- changes (admin) ---

    def check(self, change: ReleaseChange) -> None:
        """A 400 naming the version when this service has no such release."""
        if change.version not in self.releases:
            message = f"unknown release; {self.service} has {', '.join(self.releases)}"
            raise ValidationFailed([{"field": "version", "message": message}])

    def deploy(self, version: str, canary_percent: int, actor: str) -> Deployment:
        """Full rollout (percent 0 or 100), or a canary on `canary_percent` of requests."""
        with self._lock:
            now = self.deployment
            if canary_percent in (0, 100):
                if version == now.stable and now.canary is None:
                    return now  # already what runs: an idempotent repeat, nothing to record
                new = Deployment(stable=version, deployed_at=utc_timestamp(), previous=now.stable)
                return self._change(now, new, "deploy", version, actor=actor)
            if version == now.stable:
                raise Problem(409, "Already stable", f"{version} already serves all of {self.service}'s traffic.")
            if now.canary not in (None, version):
                raise Problem(
                    409,
                    "Canary running",
                    f"{now.canary} is in canary on {self.service}; promote or roll it back first.",
                )
            since = now.canary_since if now.canary == version else utc_timestamp()
            new = replace(now, canary=version, canary_percent=canary_percent, canary_since=since)
            return self._change(now, new, "canary", version, actor=actor)

    def promote(self, actor: str, reason: str = "") -> Deployment:
        with self._lock:
            now = self.deployment
            if now.canary is None:
                raise Problem(409, "No canary", f"{self.service} has no canary to promote.")
            new = Deployment(stable=now.canary, deployed_at=utc_timestamp(), previous=now.stable)
            return self._change(now, new, "promote", now.canary, actor=actor, reason=reason)

    def rollback(self, actor: str, reason: str = "") -> Deployment:
        """Drop the canary if one runs; else return to the stable release before the last rollout."""
        with self._lock:
            now = self.deployment
            if now.canary is not None:
                new = replace(now, canary=None, canary_percent=0, canary_since=None)
                return self._change(now, new, "rollback", now.canary, actor=actor, reason=reason)
            if now.previous is None:
                raise Problem(409, "Nothing to roll back", f"{self.service} has no earlier release to return to.")
            new = Deployment(stable=now.previous, deployed_at=utc_timestamp(), previous=None)
            return self._change(now, new, "rollback", now.stable, actor=actor, reason=reason)

    # --- reading ---

    def describe(self) -> dict[str, Any]:
        now = self.deployment
        stable = {**self.releases[now.stable].describe(), "deployed_at": now.deployed_at}
        canary = None
        if now.canary is not None:
            canary = {**self.releases[now.canary].describe(), "percent": now.canary_percent, "since": now.canary_since}
        return {
            "service": self.service,
            "stable": stable,
            "canary": canary,
            "previous": now.previous,
            "available": [release.describe() for release in self.releases.values()],
            "history": self.history(HISTORY_LIMIT),
        }

    def history(self, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "release_history.list",
            "SELECT at, action, version, actor, reason, stable, canary, canary_percent "
            "FROM release_history ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    # --- internals ---

    def _migrate(self) -> None:
        self.db.execute(
            "release_history.create_table",
            """CREATE TABLE IF NOT EXISTS release_history (
                id INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                action TEXT NOT NULL CHECK (action IN ('deploy', 'canary', 'promote', 'rollback')),
                version TEXT NOT NULL,
                actor TEXT NOT NULL,
                reason TEXT NOT NULL,
                stable TEXT NOT NULL,
                deployed_at TEXT NOT NULL,
                previous TEXT,
                canary TEXT,
                canary_percent INTEGER NOT NULL,
                canary_since TEXT
            )""",
        )

    def _restore(self, first: str) -> Deployment:
        """The deployment the last recorded change left, if its releases still exist in this build."""
        rows = self.db.execute(
            "release_history.latest",
            "SELECT stable, deployed_at, previous, canary, canary_percent, canary_since "
            "FROM release_history ORDER BY id DESC LIMIT 1",
        )
        if not rows:
            return Deployment(stable=first, deployed_at=utc_timestamp())
        row = rows[0]
        if row["stable"] not in self.releases:
            _log.error("release_unknown_after_restart", extra={"version": row["stable"], "running": first})
            return Deployment(stable=first, deployed_at=utc_timestamp())
        canary = row["canary"] if row["canary"] in self.releases else None
        return Deployment(
            stable=row["stable"],
            deployed_at=row["deployed_at"],
            previous=row["previous"] if row["previous"] in self.releases else None,
            canary=canary,
            canary_percent=row["canary_percent"] if canary else 0,
            canary_since=row["canary_since"] if canary else None,
        )

    def _change(
        self, old: Deployment, new: Deployment, action: str, version: str, *, actor: str, reason: str = ""
    ) -> Deployment:
        before, after = self._serving_versions(old), self._serving_versions(new)
        for started in after - before:
            self._run(self.releases[started].migrate)
        for stopped in before - after:
            self._run(self.releases[stopped].revert)
        self.db.execute(
            "release_history.insert",
            "INSERT INTO release_history (at, action, version, actor, reason, stable, deployed_at, previous, "
            "canary, canary_percent, canary_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                utc_timestamp(),
                action,
                version,
                actor,
                reason,
                new.stable,
                new.deployed_at,
                new.previous,
                new.canary,
                new.canary_percent,
                new.canary_since,
            ),
        )
        self.deployment = new
        self._published(old, new)
        _log.warning(
            f"release_{action}",
            extra={
                "version": version,
                "stable": new.stable,
                "canary": new.canary,
                "canary_percent": new.canary_percent,
                "actor": actor,
                "reason": reason,
            },
        )
        return new

    @staticmethod
    def _serving_versions(deployment: Deployment) -> set[str]:
        return {deployment.stable} | ({deployment.canary} if deployment.canary else set())

    @staticmethod
    def _run(step: Callable[[], None] | None) -> None:
        if step is not None:
            step()

    def _published(self, old: Deployment | None, new: Deployment) -> None:
        """shop_release_info says what runs on which track; the process's default version follows stable."""
        global _process_stable
        _process_stable = new.stable
        if old is not None:
            for version, track in _tracks(old):
                RELEASE_INFO.remove(self.service, version, track)
        for version, track in _tracks(new):
            RELEASE_INFO.labels(self.service, version, track).set(1)


def _tracks(deployment: Deployment) -> list[tuple[str, str]]:
    tracks = [(deployment.stable, "stable")]
    if deployment.canary:
        tracks.append((deployment.canary, "canary"))
    return tracks


def setting(name: str, default: Any) -> Any:
    """A behaviour switch of the release serving this request (`default` when that release does not set it)."""
    release = g.get("release")
    if not isinstance(release, Release):
        return default
    return release.changes.get(name, default)
