"""Property-based API tests: schemathesis generates requests from the published OpenAPI schema.

The schema is fetched from ``/api/schema/`` like an operator's client would (with an API key),
then every operation is called in-process through the WSGI application as ``ops`` and as
``admin``, with a bounded number of examples. Every answer must be free of 5xx and conform to
the schema (status code, content type, headers, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.tests.conftest import make_api_key  # noqa: F401

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    # A documented operation that answers 2xx without the credentials is a security bug.
    ignored_auth,
]
MAX_EXAMPLES = 25


@pytest.fixture
def keep_test_connection() -> Iterator[None]:
    """Calls go through the real WSGI handler, whose request signals would close the database
    connection that holds the test's transaction; Django's own test client disconnects them too."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _load(settings_: Any, make_api_key: Any, role: str) -> tuple[Any, str]:  # noqa: F811
    from autoheal_site.wsgi import application

    # The generated load would otherwise hit the per-user rate limit, which is tested elsewhere.
    settings_.AUTOHEAL_RATE_LIMIT = (1_000_000, 60)
    key = make_api_key(f"schemathesis-{role}", role)
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Bearer {key}"}
    )
    return schema, key


@pytest.fixture
def ops_schema(db: Any, keep_test_connection: None, settings: Any, make_api_key: Any) -> Any:  # noqa: F811
    schema, key = _load(settings, make_api_key, "ops")
    schema.ops_key = key
    return schema


@pytest.fixture
def admin_schema(db: Any, keep_test_connection: None, settings: Any, make_api_key: Any) -> Any:  # noqa: F811
    schema, key = _load(settings, make_api_key, "admin")
    schema.admin_key = key
    return schema


ops_api = schemathesis.pytest.from_fixture("ops_schema")
admin_api = schemathesis.pytest.from_fixture("admin_schema")
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.django_db
@ops_api.parametrize()
@HYPOTHESIS
def test_api_as_ops_conforms_to_its_schema(case: Any, ops_schema: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ops_schema.ops_key}"}, checks=CHECKS)


@pytest.mark.django_db
@admin_api.parametrize()
@HYPOTHESIS
def test_api_as_admin_conforms_to_its_schema(case: Any, admin_schema: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_schema.admin_key}"}, checks=CHECKS)
