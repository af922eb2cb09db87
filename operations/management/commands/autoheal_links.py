"""manage.py autoheal_links [--open] [--base-url URL]: print (and open) the operator quicklinks."""

from __future__ import annotations

import webbrowser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from operations.links import links_build


class Command(BaseCommand):
    help = "Print the quicklinks (Command Center, console, audit, metrics, Grafana, Prometheus, Alertmanager)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--base-url",
            default=settings.AUTOHEAL_PUBLIC_URL,
            help="Where Autoheal is reached (default: AUTOHEAL_PUBLIC_URL, else http://localhost:9009).",
        )
        parser.add_argument("--open", action="store_true", help="Also open every configured link in the browser.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            links = links_build(
                base_url=options["base_url"],
                grafana_url=settings.AUTOHEAL_GRAFANA_URL,
                prometheus_url=settings.AUTOHEAL_PROMETHEUS_URL,
                alertmanager_url=settings.AUTOHEAL_ALERTMANAGER_URL,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        width = max(len(link.name) for link in links)
        for link in links:
            self.stdout.write(f"{link.name:<{width}}  {link.url or '(' + link.hint + ')'}")
        if options["open"]:
            for link in links:
                if link.url and not webbrowser.open(link.url):
                    self.stderr.write(f"could not open {link.url}: no browser found")
