"""deploy/docker-compose.agent.yml keeps the promises of docs/deployment.md ("Running a fleet").

What it does when it runs (an agent on a second Docker host, connected, restarting a container,
stopping on SIGTERM) is checked by the compose smoke run (deploy/smoke/fleet.sh); this checks the
files themselves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
AGENT = yaml.safe_load((DEPLOY / "docker-compose.agent.yml").read_text(encoding="utf-8"))
LOCAL = yaml.safe_load((DEPLOY / "docker-compose.agent.local.yml").read_text(encoding="utf-8"))
SMOKE = yaml.safe_load((DEPLOY / "smoke" / "docker-compose.agent.smoke.yml").read_text(encoding="utf-8"))
GUIDE = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
STATE_DIR = "/var/lib/autoheal-agent"


def test_the_agent_is_locked_down_and_opens_no_port():
    agent = AGENT["services"]["autoheal-agent"]
    assert agent["read_only"] is True
    assert "/tmp" in agent["tmpfs"]
    assert agent["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in agent["security_opt"]
    assert agent["restart"] == "unless-stopped"
    for name, service in AGENT["services"].items():
        assert "ports" not in service, f"{name} publishes a port"


def test_the_token_is_a_file_secret_never_a_value():
    agent = AGENT["services"]["autoheal-agent"]
    assert "AUTOHEAL_AGENT_TOKEN" not in agent["environment"]
    assert agent["environment"]["AUTOHEAL_AGENT_TOKEN_FILE"] == "/run/secrets/agent_token"
    assert agent["secrets"] == ["agent_token"]
    assert AGENT["secrets"]["agent_token"]["file"] == "${AUTOHEAL_SECRETS_DIR:-./secrets}/agent_token"
    # ./secrets next to the compose file is deploy/secrets, where nothing is ever committed.
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert "*" in ignored


def test_the_agent_reaches_docker_only_through_the_socket_proxy():
    agent = AGENT["services"]["autoheal-agent"]
    proxy = AGENT["services"]["docker-socket-proxy"]
    assert agent["environment"]["DOCKER_HOST"] == "tcp://docker-socket-proxy:2375"
    assert not any("docker.sock" in volume for volume in agent.get("volumes", []))
    assert "${AUTOHEAL_DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock:ro" in proxy["volumes"]
    # The same rules as the central's proxy, from the same file.
    assert "./socket-proxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    assert (DEPLOY / "socket-proxy" / "haproxy.cfg").exists()
    assert set(agent["networks"]) == {"egress", "docker-api"}
    assert set(proxy["networks"]) == {"docker-api"}
    assert AGENT["networks"]["docker-api"]["internal"] is True
    assert agent["depends_on"]["docker-socket-proxy"]["condition"] == "service_healthy"


def test_the_state_dir_is_a_named_volume_the_image_makes_writable():
    agent = AGENT["services"]["autoheal-agent"]
    assert agent["environment"]["AUTOHEAL_AGENT_STATE_DIR"] == STATE_DIR
    assert f"agent-state:{STATE_DIR}" in agent["volumes"]
    assert "agent-state" in AGENT["volumes"]
    # A new named volume takes the owner of the image's directory: the service user's.
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    mkdir = re.search(r"mkdir -p ([^\\&]+)", dockerfile)
    chown = re.search(r"chown -R autoheal:autoheal ([^\\&\n]+)", dockerfile)
    assert mkdir and STATE_DIR in mkdir.group(1).split()
    assert chown and STATE_DIR in chown.group(1).split()


def test_a_stop_leaves_the_agent_time_to_finish_its_action():
    agent = AGENT["services"]["autoheal-agent"]
    assert agent["stop_grace_period"] == "60s"
    # The command is exec form: python is PID 1 and gets SIGTERM itself (no shell in between).
    assert agent["command"][:3] == ["python", "manage.py", "autoheal_agent"]


def test_the_local_override_only_swaps_the_proxy_image():
    assert LOCAL["services"] == {"docker-socket-proxy": {"image": "autoheal-local/haproxy:bookworm"}}
    assert (DEPLOY / "images" / "haproxy" / "Dockerfile").exists()


def test_the_smoke_override_only_adds_a_hosts_entry():
    assert SMOKE["services"] == {
        "autoheal-agent": {"extra_hosts": ["${AUTOHEAL_HOSTNAME}:${AUTOHEAL_SMOKE_CENTRAL_ADDR}"]}
    }


def test_the_guide_writes_a_token_file_the_agent_can_read():
    section = GUIDE[GUIDE.index("## Running a fleet") : GUIDE.index("## Upgrading")]
    assert "autoheal_agent_token create --host" in section
    assert "chmod 444 deploy/secrets/agent_token" in section
    assert "chmod 600" not in section
    assert "docker-compose -f deploy/docker-compose.agent.yml up -d" in section
    assert "deploy/docker-compose.agent.local.yml" in section
    assert "AUTOHEAL_AGENT_STATE_DIR" in section


def test_the_agent_file_resolves_and_refuses_without_server_or_host(tmp_path):
    # docker-compose is installed by scripts/provision.sh (the compose file checks).
    files = ["-f", str(DEPLOY / "docker-compose.agent.yml"), "-f", str(DEPLOY / "docker-compose.agent.local.yml")]
    env = {"PATH": "/usr/bin:/bin", "AUTOHEAL_SECRETS_DIR": str(tmp_path)}
    (tmp_path / "agent_token").write_text("not a token\n", encoding="utf-8")
    ok = subprocess.run(
        ["docker-compose", *files, "config", "--quiet"],
        env={**env, "AUTOHEAL_SERVER": "https://autoheal.example.org", "AUTOHEAL_AGENT_HOST": "web-3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    for missing in ("AUTOHEAL_SERVER", "AUTOHEAL_AGENT_HOST"):
        given = {"AUTOHEAL_SERVER": "https://autoheal.example.org", "AUTOHEAL_AGENT_HOST": "web-3"}
        del given[missing]
        refused = subprocess.run(
            ["docker-compose", *files, "config", "--quiet"],
            env={**env, **given},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and missing in refused.stderr
