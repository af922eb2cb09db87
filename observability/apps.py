from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """Registers Autoheal's metrics collector with the default Prometheus registry."""

    name = "observability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.metrics import register_write_observer
        from observability.collector import register_collector
        from observability.services import audit_write_observe

        register_collector()
        # The trail knows nothing of metrics: this app asks to see every chained audit batch.
        register_write_observer(audit_write_observe)
