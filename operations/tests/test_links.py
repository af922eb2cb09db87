"""manage.py autoheal_links: what operators see and what --open opens."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]


def run_links(*args: str) -> str:
    out = StringIO()
    call_command("autoheal_links", *args, stdout=out)
    return out.getvalue()


def test_links_point_at_every_page_under_the_base_url(settings):
    settings.AUTOHEAL_GRAFANA_URL = "http://grafana.internal:3000"
    settings.AUTOHEAL_PROMETHEUS_URL = "http://prometheus.internal:9090"
    settings.AUTOHEAL_ALERTMANAGER_URL = "http://alertmanager.internal:9093"
    out = run_links("--base-url", "https://autoheal.example/")
    for url in (
        "https://autoheal.example/ops/",
        "https://autoheal.example/console",
        "https://autoheal.example/audit",
        "https://autoheal.example/metrics",
        "https://autoheal.example/api/docs/",
        "https://autoheal.example/admin/",
        "http://grafana.internal:3000/d/autoheal",
        "http://prometheus.internal:9090",
        "http://alertmanager.internal:9093",
    ):
        assert url in out.split(), url


def test_links_default_to_the_public_url_setting_and_name_what_is_missing(settings):
    settings.AUTOHEAL_PUBLIC_URL = "http://localhost:9009"
    settings.AUTOHEAL_GRAFANA_URL = ""
    settings.AUTOHEAL_PROMETHEUS_URL = ""
    settings.AUTOHEAL_ALERTMANAGER_URL = ""
    out = run_links()
    assert "http://localhost:9009/ops/" in out
    assert "not configured: set AUTOHEAL_GRAFANA_URL" in out
    assert "not configured: set AUTOHEAL_PROMETHEUS_URL" in out
    assert "not configured: set AUTOHEAL_ALERTMANAGER_URL" in out


def test_a_base_url_without_scheme_is_refused():
    with pytest.raises(CommandError, match="http:// or https://"):
        run_links("--base-url", "autoheal.example")


def test_open_hands_every_configured_link_to_the_browser(tmp_path):
    # $BROWSER is the standard way to choose the browser webbrowser launches; a tiny script that
    # records its argument stands in for a desktop browser, which this machine does not have.
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(
        "import sys\nwith open(sys.argv[1], 'a') as f:\n    f.write(sys.argv[2] + '\\n')\n", encoding="utf-8"
    )
    env = {
        **os.environ,
        "BROWSER": f"{sys.executable} {recorder} {opened} %s",
        "AUTOHEAL_GRAFANA_URL": "http://127.0.0.1:3000",
        "AUTOHEAL_PROMETHEUS_URL": "",
        "AUTOHEAL_ALERTMANAGER_URL": "",
        "DISPLAY": "",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "autoheal_links", "--open", "--base-url", "http://127.0.0.1:9009"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = opened.read_text(encoding="utf-8").split()
    assert "http://127.0.0.1:9009/ops/" in lines
    assert "http://127.0.0.1:3000/d/autoheal" in lines
    assert len(lines) == 8  # seven Autoheal pages and Grafana; the unconfigured two are not opened
