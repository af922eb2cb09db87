from __future__ import annotations

import pytest

from observability import services


@pytest.fixture(autouse=True)
def _fresh_pending_webhook_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts left pending by earlier tests' rolled-back transactions must not leak in here."""
    monkeypatch.setattr(services, "pending_webhook_counts", services._PendingWebhookCounts())
