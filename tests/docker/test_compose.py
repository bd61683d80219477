"""docker/compose.yaml, read as Compose reads it, without a Docker engine.

Variables are interpolated the way Compose does (``${VAR}``, ``${VAR:-default}``,
``${VAR:?error}``, ``$$``) from docker/.env.example with its one required value filled
in; the result is validated against the Compose Specification's JSON schema
(compose-spec.json beside this file: schema/compose-spec.json of the Compose
Specification, Apache-2.0, commit 170098b of 2026-06-23). Then what a self-hoster
relies on:

- the TimescaleDB image is pinned to a version, and the service waits for a one-shot
  ``migrate`` that runs ``apinalytics migrate`` once the database is healthy;
- no password is written in compose.yaml: it comes from .env, and is required;
- the service's port is bound to 127.0.0.1 unless .env says otherwise;
- the state volume is mounted at the image's APINALYTICS_HOME.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from . import dockerfile
from .dockerfile import ROOT

COMPOSE = ROOT / "docker" / "compose.yaml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")
PASSWORD = "s3cr3tfromenv"

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        got = env.get(name)
        unset_or_empty = not got if op and op.startswith(":") else got is None
        if op in (":-", "-"):
            return arg if unset_or_empty else str(got)
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return str(got)
        return got or ""

    return _VAR.sub(one, value)


def dotenv(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def config(**overrides: str) -> dict[str, Any]:
    """What ``docker compose config`` gives with .env.example, the password set."""
    env = {**dotenv(ENV_EXAMPLE), "POSTGRES_PASSWORD": PASSWORD, **overrides}
    resolved: dict[str, Any] = interpolate(raw(), env)
    # YAML merge keys (<<) are resolved by the loader; extension fields stay as x-*.
    return resolved


def test_it_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema_rs.validator_for(schema)
    for doc in (raw(), config()):
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors


def test_the_validation_can_fail() -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = config()
    broken["services"]["apinalytics"]["depends_on"]["migrate"]["condition"] = "finished"
    assert not jsonschema_rs.validator_for(schema).is_valid(broken)


def test_timescaledb_is_pinned_to_a_version() -> None:
    image = config()["services"]["timescaledb"]["image"]
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg\d+", image), image


def test_the_service_starts_after_a_one_shot_migrate() -> None:
    services = config()["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["apinalytics", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert migrate["image"] == services["apinalytics"]["image"]
    assert migrate["build"]["dockerfile"] == "docker/Dockerfile"
    assert (COMPOSE.parent / migrate["build"]["context"] / "docker" / "Dockerfile").is_file()
    app = services["apinalytics"]
    assert app["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    # The service itself does not migrate: the image's CMD says --no-migrate.
    assert "command" not in app
    assert "--no-migrate" in dockerfile.stages()[-1].cmd
    url = app["environment"]["APINALYTICS_DATABASE_URL"]
    assert url == migrate["environment"]["APINALYTICS_DATABASE_URL"]
    assert url == f"postgresql://apinalytics:{PASSWORD}@timescaledb:5432/apinalytics"


def test_no_password_is_written_down() -> None:
    text = COMPOSE.read_text()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text
    assert dotenv(ENV_EXAMPLE)["POSTGRES_PASSWORD"] == ""
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        config(POSTGRES_PASSWORD="")
    assert "docker/.env" in (ROOT / ".gitignore").read_text().splitlines()
    assert "docker/.env" in dockerfile.DOCKERIGNORE.read_text().splitlines()


def test_the_port_is_bound_to_localhost_by_default() -> None:
    assert config()["services"]["apinalytics"]["ports"] == ["127.0.0.1:8080:8080"]
    without_env = interpolate(raw(), {"POSTGRES_PASSWORD": PASSWORD})
    assert without_env["services"]["apinalytics"]["ports"] == ["127.0.0.1:8080:8080"]
    assert config(APINALYTICS_BIND="0.0.0.0", APINALYTICS_PORT="9000")["services"]["apinalytics"][
        "ports"
    ] == ["0.0.0.0:9000:8080"]
    assert dockerfile.stages()[-1].env["APINALYTICS_PORT"] == "8080"


def test_the_state_volume_is_the_images_home() -> None:
    home = dockerfile.stages()[-1].env["APINALYTICS_HOME"]
    assert f"apinalytics-state:{home}" in config()["services"]["apinalytics"]["volumes"]
