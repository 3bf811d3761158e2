"""The responder's own releases (it runs one, like every service on shoplib)."""

from __future__ import annotations

from shoplib.releases import Release

RELEASES = (Release("1.0.0", "Diagnoses page alerts, rolls back recent releases of the culprit, analyses canaries."),)
