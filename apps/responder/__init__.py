"""responder: receives Alertmanager's page alerts, diagnoses them from symptoms (incident.diagnosis), rolls back
a recent release of the culprit service, and analyses canaries. Incidents are kept in its own SQLite file.

It signs its own short-lived admin tokens with the shop's JWT secret, so it can act while auth is the service
that is down, and has no password to leak or default."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from incident.backends import Backends, http_transport
from incident.diagnosis import diagnose_from
from incident.links import DEFAULT_GRAFANA_URL
from incident.releases import ReleaseClient, signed_admin_token
from shoplib.app import init_app, new_app, open_database
from shoplib.config import Setting, choice, http_url, integer, number, service_url, text
from shoplib.services import SERVICES

from .canary import CanaryAnalyst
from .engine import Policy, Responder
from .incidents import IncidentStore
from .releases import RELEASES
from .views import bp

BACKEND_TIMEOUT_S = 4.0
DEV_RESPONDER_TOKEN = "dev-only-responder-token-never-use-outside-a-laptop"
SETTINGS = (
    Setting("RESPONDER_MODE", choice("auto", "suggest", "off"), default="auto"),
    # Alertmanager's credentials for POST /alerts (compose: a generated one, RESPONDER_TOKEN_FILE).
    Setting("RESPONDER_TOKEN", text(min_length=32), dev_default=DEV_RESPONDER_TOKEN),
    Setting("PROMETHEUS_URL", http_url, default="http://127.0.0.1:9090"),
    Setting("TEMPO_URL", http_url, default="http://127.0.0.1:3200"),
    Setting("LOKI_URL", http_url, default="http://127.0.0.1:3100"),
    Setting("GRAFANA_URL", http_url, default=DEFAULT_GRAFANA_URL),
    *(service_url(service) for service in SERVICES),
    Setting("DIAGNOSIS_WINDOW_S", integer(10, 3600), default=60),
    Setting("RESPONDER_COOLDOWN_S", integer(0, 86_400), default=300),
    # A rollback undoes a release that went out within this long; older ones are suggested, not undone.
    Setting("RECENT_DEPLOY_S", integer(0, 7 * 86_400), default=1800),
    Setting("CANARY_INTERVAL_S", number(0, 600), default=5.0),  # 0 turns canary analysis off
    Setting("CANARY_FAILS_TO_ROLL_BACK", integer(1, 100), default=3),
    Setting("CANARY_PASSES_TO_PROMOTE", integer(1, 1000), default=12),
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = new_app(__name__, "responder", SETTINGS, test_config)
    config = app.config
    db = open_database(app)
    store = IncidentStore(db)
    store.migrate()
    urls = {service: config[f"{service.upper()}_URL"] for service in SERVICES}
    releases = ReleaseClient(urls, signed_admin_token("responder", config))
    backends = {"prometheus": config["PROMETHEUS_URL"], "tempo": config["TEMPO_URL"], "loki": config["LOKI_URL"]}
    window_s = config["DIAGNOSIS_WINDOW_S"]
    policy = Policy(
        mode=config["RESPONDER_MODE"],
        cooldown=timedelta(seconds=config["RESPONDER_COOLDOWN_S"]),
        recent_deploy=timedelta(seconds=config["RECENT_DEPLOY_S"]),
    )
    app.extensions["responder.incidents"] = store
    app.extensions["responder.engine"] = Responder(
        store,
        releases,
        lambda: diagnose_from({**backends, "grafana": config["GRAFANA_URL"]}, window_s, BACKEND_TIMEOUT_S),
        policy,
    )
    if config["CANARY_INTERVAL_S"] > 0 and policy.mode == "auto":
        CanaryAnalyst(
            SERVICES,
            releases,
            Backends(http_transport({"prometheus": config["PROMETHEUS_URL"]}, BACKEND_TIMEOUT_S)),
            interval_s=config["CANARY_INTERVAL_S"],
            fails_to_roll_back=config["CANARY_FAILS_TO_ROLL_BACK"],
            passes_to_promote=config["CANARY_PASSES_TO_PROMOTE"],
        ).start()
    app.register_blueprint(bp)
    init_app(app, db=db, releases=RELEASES, readiness=[("database", db.ping)])
    return app
