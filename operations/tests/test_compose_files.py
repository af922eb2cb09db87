"""The compose files point at files that exist, and keep the promises the guides make about them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
PROD = yaml.safe_load((DEPLOY / "docker-compose.prod.yml").read_text(encoding="utf-8"))
AUTOHEAL = ("autoheal-web", "autoheal-stream", "autoheal-worker", "autoheal-watcher")


def bind_sources(compose: dict) -> list[str]:
    sources = []
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                sources.append(source)
        build = service.get("build")
        if isinstance(build, dict) and build.get("context", "").startswith("./"):
            sources.append(build["context"])
    return sources


# Secrets are made on the host by deploy/secrets/init.sh, never kept in the repository.
MOUNTED = sorted({s for s in bind_sources(BASE) + bind_sources(PROD) if not s.startswith("./secrets/")})


@pytest.mark.parametrize("source", MOUNTED)
def test_every_mounted_file_exists_in_the_repository(source):
    assert (DEPLOY / source).exists(), f"{source} is mounted but missing"


def test_every_secret_file_is_made_by_the_init_script():
    init = (DEPLOY / "secrets" / "init.sh").read_text(encoding="utf-8")
    files = {s.removeprefix("./secrets/") for s in bind_sources(BASE) if s.startswith("./secrets/")}
    files |= {secret["file"].removeprefix("./secrets/") for secret in BASE["secrets"].values()}
    for name in sorted(files):
        assert f"put {name} " in init, f"deploy/secrets/init.sh does not make {name}"


def test_secrets_are_files_never_values():
    for name in AUTOHEAL:
        environment = BASE["services"][name]["environment"]
        for variable in ("SECRET_KEY", "DATABASE_URL", "AUTOHEAL_WEBHOOK_TOKENS", "OIDC_RP_CLIENT_SECRET"):
            assert variable not in environment, f"{name} has {variable} as a value"
        assert environment["SECRET_KEY_FILE"].startswith("/run/secrets/")
        assert environment["DATABASE_URL_FILE"].startswith("/run/secrets/")
    assert "POSTGRES_PASSWORD" not in BASE["services"]["postgres"]["environment"]


def test_production_runs_the_canary_with_limits_and_restarts():
    env = PROD["x-autoheal-prod-env"]
    assert env["AUTOHEAL_ENV"] == "production"
    assert env["AUTOHEAL_DRY_RUN"] == "${AUTOHEAL_DRY_RUN:-true}"
    limits = {
        name: (PROD["services"][name].get("cpus"), PROD["services"][name].get("mem_limit")) for name in PROD["services"]
    }
    for name in AUTOHEAL:
        assert limits[name] == (1.0, "512m")
    assert limits["prometheus"] == (2.0, "2g")
    assert limits["grafana"] == (1.0, "1g")
    assert limits["alertmanager"] == (0.5, "512m")
    for name, service in PROD["services"].items():
        if name != "autoheal-migrate":
            assert service.get("restart") == "unless-stopped", name


def test_only_the_worker_and_watcher_reach_the_docker_socket_proxy():
    on_docker_api = sorted(
        name for name, service in BASE["services"].items() if "docker-api" in (service.get("networks") or {})
    )
    assert on_docker_api == ["autoheal-watcher", "autoheal-worker", "docker-socket-proxy"]
    assert BASE["networks"]["docker-api"]["internal"] is True
    socket_mounts = [
        name
        for name, service in BASE["services"].items()
        if any("docker.sock" in volume for volume in service.get("volumes", []))
    ]
    assert socket_mounts == ["docker-socket-proxy"]
    assert (
        "${AUTOHEAL_DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock:ro"
        in BASE["services"]["docker-socket-proxy"]["volumes"]
    )


def test_published_ports_bind_loopback_unless_told_otherwise():
    for name, service in BASE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${AUTOHEAL_PUBLISH_ADDR:-127.0.0.1}:"), (name, port)


def test_metrics_token_is_a_file_secret_shared_by_autoheal_and_prometheus():
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "autoheal")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/autoheal_metrics_token"}
    assert "autoheal_metrics_token" in BASE["services"]["prometheus"]["secrets"]
    for name in AUTOHEAL:
        service = BASE["services"][name]
        assert service["environment"]["AUTOHEAL_METRICS_TOKEN_FILE"] == "/run/secrets/autoheal_metrics_token"
        assert "autoheal_metrics_token" in service["secrets"]
        assert "autoheal_metrics_token" in PROD["services"][name]["secrets"], f"{name} loses the token in production"
    assert "AUTOHEAL_METRICS_TOKEN" not in BASE["x-autoheal"]["environment"], "a secret as an environment value"


def test_autoheal_runs_on_a_read_only_root_filesystem():
    for name in (*AUTOHEAL, "autoheal-migrate"):
        assert BASE["services"][name]["read_only"] is True
        assert "/tmp" in BASE["services"][name]["tmpfs"]


def test_the_local_image_override_only_swaps_images_and_leaves_grafana_out():
    local = yaml.safe_load((DEPLOY / "docker-compose.local.yml").read_text(encoding="utf-8"))
    for name, service in local["services"].items():
        assert name in BASE["services"], f"{name} is not a service of docker-compose.yml"
        if name == "grafana":
            assert service == {"profiles": ["grafana"]}
        elif name.startswith("autoheal-") and "build" in BASE["services"][name]:
            assert service == {"build": {"args": {"BASE": "autoheal-local/python:3.11-bookworm"}}}
        else:
            assert set(service) == {"image"} and service["image"].startswith("autoheal-local/")
    upstream = {name for name, service in BASE["services"].items() if not service["image"].startswith("autoheal:")}
    assert upstream - {"grafana"} == {name for name, service in local["services"].items() if "image" in service}
    for name in {
        s.removeprefix("autoheal-local/").split(":")[0]
        for s in (v.get("image", "") for v in local["services"].values())
        if s
    }:
        assert (DEPLOY / "images" / name / "Dockerfile").exists(), f"no deploy/images/{name}/Dockerfile"
