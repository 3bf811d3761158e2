"""The lab's secrets: generated at random on the first start, kept across restarts, a value set in .env wins.

    python lab_secrets.py init          write every secret missing from the folder (compose's lab-init service)
    python lab_secrets.py show NAME     print one secret, e.g. grafana_admin_password
    python lab_secrets.py welcome       what a newcomer needs after `make up`: URLs, users, where the passwords are

The folder is LAB_SECRETS_DIR (compose: the lab-secrets volume at /run/lab-secrets, mounted read-only into the
services that read a secret through a `*_FILE` variable). Standard library only: it runs in the plain Python
image, before anything of the lab's is built. Never prints a secret, except when `show` is asked to.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = "/run/lab-secrets"


@dataclass(frozen=True)
class Secret:
    name: str  # its file in the folder
    variable: str  # the .env variable that overrides it
    min_length: int
    used_by: str


SECRETS = (
    Secret("jwt_secret", "JWT_SECRET", 32, "signs the shop's tokens (JWT_SECRET_FILE)"),
    Secret("shop_admin_password", "DEMO_ADMIN_PASSWORD", 8, "the shop's admin user (DEMO_ADMIN_PASSWORD_FILE)"),
    Secret("grafana_admin_password", "GF_ADMIN_PASSWORD", 8, "Grafana's admin user"),
    Secret("responder_token", "RESPONDER_TOKEN", 32, "Alertmanager's credentials at the responder"),
)
BY_NAME = {secret.name: secret for secret in SECRETS}


class SetupError(Exception):
    """A value given in .env cannot be used."""


def folder() -> Path:
    return Path(os.environ.get("LAB_SECRETS_DIR") or DEFAULT_DIR)


def init(directory: Path, environ: dict[str, str]) -> list[str]:
    """Write each secret: the .env value if one is set, else the one already kept, else a new random one.
    Returns a line per secret saying which; checks every .env value before writing any."""
    given = {s.name: environ.get(s.variable, "").strip() for s in SECRETS}
    problems = [
        f"{s.variable} in .env must be at least {s.min_length} characters (or unset, to generate one)"
        for s in SECRETS
        if given[s.name] and len(given[s.name]) < s.min_length
    ]
    if problems:
        raise SetupError("; ".join(problems))
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    lines = []
    for secret in SECRETS:
        path = directory / secret.name
        kept = path.read_text().strip() if path.exists() else ""
        if given[secret.name]:
            value, origin = given[secret.name], f"from {secret.variable} in .env"
        elif len(kept) >= secret.min_length:
            value, origin = kept, "kept"
        else:
            value, origin = secrets.token_urlsafe(32), "generated"
        if value != kept:
            _write(path, value)
        lines.append(f"{secret.name}: {origin} ({secret.used_by})")
    return lines


def _write(path: Path, value: str) -> None:
    """Atomically, so a service starting meanwhile never reads half a secret. Readable by the services' own
    users (each image runs as another uid); only containers given the volume can see it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(value + "\n")
    partial.chmod(0o444)
    partial.replace(path)


def show(directory: Path, name: str) -> str:
    if name not in BY_NAME:
        raise SetupError(f"no secret named {name!r}; choose from {', '.join(BY_NAME)}")
    path = directory / name
    if not path.exists():
        raise SetupError(f"{name} has not been generated yet: start the lab first (make up)")
    return path.read_text().strip()


WELCOME = """\
shoplab is up. Everything listens on 127.0.0.1 only.

  Grafana        http://localhost:3000   dashboards: anonymous viewing; admin user 'admin'
  Locust         http://localhost:8089   10 steady users already shop
  Prometheus     http://localhost:9090   Alertmanager http://localhost:9093
  Responder      http://localhost:8085/incidents
  Shop           catalog :8081  checkout :8082  payment :8083  auth :8084

The shop's demo users: alice / alice-pass and bob / bob-pass (customers). Its admin user and Grafana's admin
have passwords generated on the first start, kept in the lab-secrets volume; read them with
  docker compose run --rm --no-deps lab-init show grafana_admin_password
  docker compose run --rm --no-deps lab-init show shop_admin_password
Admin commands from this machine (shoplab deploy, rollback, scenario) sign their own token with the JWT secret:
  export JWT_SECRET=$(docker compose run --rm --no-deps lab-init show jwt_secret)
A value set in .env (see .env.example) replaces a generated one at the next start (Grafana keeps the admin
password it stored on its first start).

  The peak hour   make peak-hour (or in Locust: Stop, New, PeakHourShape, Start); make steady goes back
  Stop            docker compose down           (data kept)
  Reset           docker compose down -v        (data and secrets gone; new ones next start)
"""


def main(argv: list[str]) -> int:
    command, *rest = argv or ["init"]
    try:
        if command == "init" and not rest:
            for line in init(folder(), dict(os.environ)):
                print(line, flush=True)
        elif command == "show" and len(rest) == 1:
            print(show(folder(), rest[0]))
        elif command == "welcome" and not rest:
            print(WELCOME, end="")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except SetupError as exc:
        print(f"lab-init: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
