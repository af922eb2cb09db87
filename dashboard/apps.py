from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The operator pages: the live console and the Command Center."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.services import register_after_commit_batch
        from audit.streams.publish import stream_publish_batch

        # Every process (web, worker, watcher) announces its committed audit events to the live
        # stream. Only a hook is registered here; the stream's reader starts with the first client.
        register_after_commit_batch(stream_publish_batch)
