"""lab-init: the secrets a fresh clone starts with. Run as compose runs it (a process writing into a folder), and
then read by a real auth service in production mode, as compose hands them over (*_FILE)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import requests

from incident.cli import _admin_token
from lab_secrets import SECRETS
from shop import REPO
from shoplib.supervisor import Supervisor

SCRIPT = REPO / "lab-init" / "lab_secrets.py"
pytestmark = pytest.mark.integration  # every test runs the script as a process


def run(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {s.variable for s in SECRETS}}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**clean, "LAB_SECRETS_DIR": str(folder), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def kept(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in folder.iterdir()}


def test_the_first_start_generates_every_secret_and_never_prints_one(tmp_path):
    result = run(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    values = kept(tmp_path)
    assert set(values) == {s.name for s in SECRETS}
    assert len(set(values.values())) == len(SECRETS)
    for secret in SECRETS:
        assert len(values[secret.name].strip()) >= max(secret.min_length, 40)
        assert values[secret.name].strip() not in result.stdout + result.stderr
        assert f"{secret.name}: generated" in result.stdout
        # Readable by each service's own user, writable by none.
        assert stat.S_IMODE((tmp_path / secret.name).stat().st_mode) == 0o444


def test_a_restart_keeps_them_and_a_value_from_env_wins(tmp_path):
    run(tmp_path, "init")
    first = kept(tmp_path)
    assert run(tmp_path, "init").returncode == 0 and kept(tmp_path) == first
    given = "g" * 40
    result = run(tmp_path, "init", JWT_SECRET=given)
    assert result.returncode == 0 and "jwt_secret: from JWT_SECRET in .env" in result.stdout
    assert kept(tmp_path) == {**first, "jwt_secret": given + "\n"}
    assert run(tmp_path, "show", "jwt_secret").stdout == given + "\n"


def test_a_short_value_in_env_is_refused_by_name_and_nothing_is_written(tmp_path):
    result = run(tmp_path, "init", JWT_SECRET="short", RESPONDER_TOKEN="also-short")
    assert result.returncode == 1
    assert "JWT_SECRET in .env must be at least 32 characters" in result.stderr
    assert "RESPONDER_TOKEN in .env must be at least 32 characters" in result.stderr
    assert not tmp_path.exists() or kept(tmp_path) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [(("show", "root_password"), "no secret named 'root_password'"), (("show", "jwt_secret"), "not been generated")],
)
def test_show_names_what_is_wrong(tmp_path, args, message):
    result = run(tmp_path / "empty", *args)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_command_prints_the_usage(tmp_path):
    result = run(tmp_path, "rotate")
    assert result.returncode == 2 and "python lab_secrets.py init" in result.stderr


def test_auth_in_production_takes_its_secrets_from_the_files_and_admin_pass_is_refused(tmp_path, monkeypatch):
    """The path compose takes: no secret in the environment, only *_FILE; the generated admin password logs in,
    the native default does not. shoplab finds its admin token through the same files."""
    folder = tmp_path / "secrets"
    assert run(folder, "init").returncode == 0
    environ = {
        "SHOP_ENV": "prod",
        "JWT_SECRET_FILE": str(folder / "jwt_secret"),
        "DEMO_ADMIN_PASSWORD_FILE": str(folder / "shop_admin_password"),
        "OTEL_SDK_DISABLED": "true",
    }
    with (
        (tmp_path / "auth.out").open("wb") as out,
        Supervisor(tmp_path / "data", services=("auth",), environ=environ, stdout=out) as shop,
    ):
        assert shop.wait_ready(60), (tmp_path / "auth.out").read_text()[-2000:]
        login = shop.urls["auth"] + "/login"
        password = (folder / "shop_admin_password").read_text().strip()
        assert requests.post(login, json={"username": "admin", "password": "admin-pass"}, timeout=5).status_code == 401
        assert requests.post(login, json={"username": "admin", "password": password}, timeout=5).status_code == 200
        for name in ("SHOPLAB_ADMIN_TOKEN", "JWT_SECRET", "DEMO_ADMIN_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("DEMO_ADMIN_PASSWORD_FILE", environ["DEMO_ADMIN_PASSWORD_FILE"])
        logged_in = _admin_token(shop.urls["auth"])()
        assert decode_with(folder / "jwt_secret", logged_in)["sub"] == "admin"
        monkeypatch.setenv("JWT_SECRET_FILE", environ["JWT_SECRET_FILE"])
        signed = _admin_token("http://127.0.0.1:9")()  # signs its own: auth is never asked
        assert decode_with(folder / "jwt_secret", signed)["roles"] == ["admin"]


def decode_with(secret_file: Path, token: str) -> dict:
    return jwt.decode(token, secret_file.read_text().strip(), algorithms=["HS256"], options={"verify_aud": False})
