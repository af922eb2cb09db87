from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Operator tooling: backup and restore, the canary gate, quicklinks."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "operations"
    verbose_name = "Operations"
