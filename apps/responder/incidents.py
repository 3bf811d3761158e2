"""Incidents the responder has handled, in its own SQLite file: one per page alert firing (Alertmanager's
fingerprint and start), with the diagnosis, the action and when each step happened."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from shoplib.db import Database, must_exist, utc_timestamp

_COLUMNS = (
    "id, fingerprint, alertname, service, labels, annotations, status, fired_at, received_at, diagnosed_at, "
    "mitigated_at, resolved_at, culprit_service, culprit_operation, diagnosis, action, outcome, detail"
)


class IncidentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def migrate(self) -> None:
        self.db.execute(
            "incidents.create_table",
            """CREATE TABLE IF NOT EXISTS incidents (
                id TEXT PRIMARY KEY,
                fingerprint TEXT NOT NULL,
                alertname TEXT NOT NULL,
                service TEXT NOT NULL,
                labels TEXT NOT NULL,
                annotations TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
                fired_at TEXT NOT NULL,
                received_at TEXT NOT NULL,
                diagnosed_at TEXT,
                mitigated_at TEXT,
                resolved_at TEXT,
                culprit_service TEXT,
                culprit_operation TEXT,
                diagnosis TEXT,
                action TEXT,
                outcome TEXT,
                detail TEXT,
                UNIQUE (fingerprint, fired_at)
            )""",
        )
        self.db.execute(
            "incidents.create_received_index",
            "CREATE INDEX IF NOT EXISTS idx_incidents_received ON incidents (received_at)",
        )

    def open(self, alert: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The incident of a firing alert, and whether this call created it (Alertmanager repeats itself)."""
        labels = alert["labels"]
        try:
            self.db.execute(
                "incidents.insert",
                "INSERT INTO incidents (id, fingerprint, alertname, service, labels, annotations, status, fired_at, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, 'firing', ?, ?)",
                (
                    uuid.uuid4().hex,
                    alert["fingerprint"],
                    labels.get("alertname", ""),
                    labels.get("service", ""),
                    json.dumps(labels, sort_keys=True),
                    json.dumps(alert["annotations"], sort_keys=True),
                    alert["startsAt"],
                    utc_timestamp(),
                ),
            )
            created = True
        except sqlite3.IntegrityError:
            created = False
        incident = must_exist(self._by_alert(alert["fingerprint"], alert["startsAt"]), "the incident")
        return incident, created

    def resolve(self, fingerprint: str, fired_at: str) -> tuple[dict[str, Any] | None, bool]:
        """Mark the incident of a resolved alert: (incident, whether this call resolved it); None when the
        responder never saw it fire."""
        changed = self.db.execute_count(
            "incidents.resolve",
            "UPDATE incidents SET status = 'resolved', resolved_at = ? "
            "WHERE fingerprint = ? AND fired_at = ? AND status = 'firing'",
            (utc_timestamp(), fingerprint, fired_at),
        )
        return self._by_alert(fingerprint, fired_at), changed > 0

    def diagnosed(
        self, incident_id: str, diagnosis: dict[str, Any], service: str | None, operation: str | None
    ) -> None:
        self.db.execute(
            "incidents.diagnosed",
            "UPDATE incidents SET diagnosed_at = ?, diagnosis = ?, culprit_service = ?, culprit_operation = ? "
            "WHERE id = ?",
            (utc_timestamp(), json.dumps(diagnosis), service, operation, incident_id),
        )

    def acted(self, incident_id: str, action: str, outcome: str, detail: str) -> None:
        mitigated = utc_timestamp() if (action, outcome) == ("rollback", "done") else None
        self.db.execute(
            "incidents.acted",
            "UPDATE incidents SET action = ?, outcome = ?, detail = ?, mitigated_at = ? WHERE id = ?",
            (action, outcome, detail, mitigated, incident_id),
        )

    def last_rollback(self, service: str, since: str) -> dict[str, Any] | None:
        """The latest incident since `since` whose action rolled back `service` (the cooldown)."""
        rows = self.db.execute(
            "incidents.last_rollback",
            f"SELECT {_COLUMNS} FROM incidents WHERE culprit_service = ? AND action = 'rollback' "
            "AND outcome = 'done' AND mitigated_at >= ? ORDER BY mitigated_at DESC LIMIT 1",
            (service, since),
        )
        return _incident(rows[0]) if rows else None

    def count_firing(self) -> int:
        rows = self.db.execute("incidents.count_firing", "SELECT COUNT(*) AS n FROM incidents WHERE status = 'firing'")
        return int(rows[0]["n"])

    def get(self, incident_id: str) -> dict[str, Any] | None:
        rows = self.db.execute("incidents.get", f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (incident_id,))
        return _incident(rows[0]) if rows else None

    def recent(self, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "incidents.recent", f"SELECT {_COLUMNS} FROM incidents ORDER BY received_at DESC, id LIMIT ?", (limit,)
        )
        return [_incident(row) for row in rows]

    def _by_alert(self, fingerprint: str, fired_at: str) -> dict[str, Any] | None:
        rows = self.db.execute(
            "incidents.get_by_alert",
            f"SELECT {_COLUMNS} FROM incidents WHERE fingerprint = ? AND fired_at = ?",
            (fingerprint, fired_at),
        )
        return _incident(rows[0]) if rows else None


def _incident(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "alert": {
            "alertname": row["alertname"],
            "service": row["service"],
            "fingerprint": row["fingerprint"],
            "labels": json.loads(row["labels"]),
            "annotations": json.loads(row["annotations"]),
        },
        "culprit": {"service": row["culprit_service"], "operation": row["culprit_operation"]},
        "diagnosis": json.loads(row["diagnosis"]) if row["diagnosis"] else None,
        "action": {"kind": row["action"], "outcome": row["outcome"], "detail": row["detail"]}
        if row["action"]
        else None,
        "timestamps": {
            "fired": row["fired_at"],
            "received": row["received_at"],
            "diagnosed": row["diagnosed_at"],
            "mitigated": row["mitigated_at"],
            "resolved": row["resolved_at"],
        },
    }
