from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """Registers Autoheal's metrics collector with the default Prometheus registry."""

    name = "observability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from observability.collector import register_collector

        register_collector()
