"""The operator's allow-lists for the remediation tests.

Tests run ``command`` actions with a few standard programs, and import policies that call
example webhook hosts with one header secret; here they are what an operator would list in
``AUTOHEAL_COMMAND_ALLOW``, ``AUTOHEAL_WEBHOOK_ACTION_ALLOW`` and ``AUTOHEAL_ACTION_SECRETS``.
Tests of the refusals set their own, narrower values.

The real Alertmanager fixture is shared from here too.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediation.tests.alertmanager_helpers import alertmanager
from remediation.tests.exec_helpers import allowed_test_programs

__all__ = ["alertmanager"]


@pytest.fixture(autouse=True)
def _operator_allows_the_test_programs(settings: Any) -> None:
    settings.AUTOHEAL_COMMAND_ALLOW = allowed_test_programs()
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = ["https://pager.example/", "https://hooks.example/"]
    settings.AUTOHEAL_ACTION_SECRETS = ["PAGER_KEY"]
