from django.apps import AppConfig


class FleetConfig(AppConfig):
    """One central Autoheal and an agent on every Docker host: tokens, agents, hand-over."""

    name = "fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from fleet.metrics import register_fleet_collector

        register_fleet_collector()
