"""The admin shows the trail read-only; the OpenAPI schema documents /audit for operators."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_admin_lists_filters_and_searches_events(admin_client: Any, trail: dict[str, Any]) -> None:
    page = admin_client.get("/admin/audit/auditevent/")
    assert page.status_code == 200
    assert page.content.count(b'class="field-kind"') == 11
    by_kind = admin_client.get("/admin/audit/auditevent/?kind__exact=action_ok")
    assert by_kind.content.count(b'class="field-kind"') == 2
    searched = admin_client.get("/admin/audit/auditevent/?q=SEVERITY%3Dcritical")
    assert searched.content.count(b'class="field-kind"') == 3


def test_admin_search_past_its_budget_looks_at_the_newest_events_only(
    admin_client: Any, trail: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit import admin as audit_admin

    monkeypatch.setattr(audit_admin, "SEARCH_BUDGET_MS", 0)
    monkeypatch.setattr(audit_admin, "ADMIN_SEARCH_WINDOW", 4)
    # "firing" is in 7 alerts; the newest 4 events hold 2 of them.
    searched = admin_client.get("/admin/audit/auditevent/?q=FIRING")
    assert searched.content.count(b'class="field-kind"') == 2


def test_admin_cannot_add_change_or_delete_events(admin_client: Any, trail: dict[str, Any]) -> None:
    from audit.models import AuditEvent

    event = AuditEvent.objects.order_by("id").first()
    assert event is not None
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert admin_client.get(f"/admin/audit/auditevent/{event.id}/delete/").status_code == 403
    detail = admin_client.get(f"/admin/audit/auditevent/{event.id}/change/")
    assert detail.status_code == 200
    assert b'name="message"' not in detail.content  # shown, not editable
    posted = admin_client.post(f"/admin/audit/auditevent/{event.id}/change/", {"message": "rewritten"})
    assert posted.status_code == 403
    assert AuditEvent.objects.get(id=event.id).message == event.message


def test_schema_documents_every_audit_parameter(ops_client: Any) -> None:
    response = ops_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    import json

    schema = json.loads(response.content)
    operation = schema["paths"]["/audit"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert names >= {"kind", "alertname", "since", "until", "contains", "n", "cursor"}
    assert {"200", "400"} <= set(operation["responses"])


def test_docs_page_loads_its_ui_from_this_server(ops_client: Any) -> None:
    response = ops_client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "https://" not in html and "<script>" not in html
    script = ops_client.get("/api/docs/?script=")
    assert script.status_code == 200 and b"/api/schema/" in script.content


def test_schema_and_docs_need_a_role(client: Any, norole_client: Any) -> None:
    assert norole_client.get("/api/schema/").status_code == 403
    assert norole_client.get("/api/docs/").status_code == 403
    norole_client.logout()
    assert client.get("/api/schema/").status_code in (401, 403)


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("path", ["/api/docs/", "/api/schema/"])
def test_a_browser_not_signed_in_is_sent_to_the_login_page_and_back(client: Any, path: str) -> None:
    response = client.get(path, HTTP_ACCEPT=BROWSER_ACCEPT)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("path", ["/api/docs/", "/api/schema/"])
@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/vnd.oai.openapi+json"])
def test_api_clients_not_signed_in_still_get_a_401_json(client: Any, path: str, accept: str) -> None:
    response = client.get(path, HTTP_ACCEPT=accept)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "detail" in response.json()


def test_a_wrong_api_key_from_a_browser_like_client_is_still_a_401(client: Any) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT=BROWSER_ACCEPT, HTTP_AUTHORIZATION="Bearer ahk_wrong")
    assert response.status_code == 401
