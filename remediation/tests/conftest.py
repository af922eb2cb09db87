"""Fixtures shared by the remediation tests."""

from remediation.tests.alertmanager_helpers import alertmanager

__all__ = ["alertmanager"]
