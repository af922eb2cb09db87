from django.apps import AppConfig


class RemediationConfig(AppConfig):
    name = "remediation"
    default_auto_field = "django.db.models.BigAutoField"
