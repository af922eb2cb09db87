"""Alertmanager's silences against a real Alertmanager 0.25: respected before acting, and created
while repairing so the people's receiver is not paged for an alert that is being fixed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from remediation import silences
from remediation.models import ActionSilence, Job
from remediation.tests.alertmanager_helpers import RunningAlertmanager
from remediation.tests.exec_helpers import drain, events, make_alert, make_job, make_policy, wait_until
from tests.test_e2e_prometheus import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.alertmanager, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_silence_cache() -> None:
    silences.cache_clear()


def _eq(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": False, "isEqual": True}


def test_a_silenced_alert_is_skipped_with_the_silence_in_the_audit_and_an_ha_peer_down_does_not_matter(
    settings: Any, alertmanager: RunningAlertmanager, tmp_path: Path
) -> None:
    # The first member of the pair does not answer: any member that answers will do.
    settings.AUTOHEAL_ALERTMANAGER_URL = f"http://127.0.0.1:{free_port()},{alertmanager.url}"
    silence_id = alertmanager.silence(
        matchers=[_eq("container", "web"), {"name": "severity", "value": "crit.*", "isRegex": True, "isEqual": True}],
        created_by="alice",
        comment="upgrading the web tier",
    )
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker)]})
    silenced = make_job(policy=policy, alert=make_alert())
    drain()
    silenced.refresh_from_db()
    assert silenced.state == Job.State.SKIPPED and silenced.skip_reason == "silenced"
    assert not marker.exists()
    skipped = events("action_skipped", fingerprint=silenced.alert.fingerprint)[0]
    assert skipped.data["reason"] == "silenced"
    assert skipped.data["silence"]["id"] == silence_id
    assert skipped.data["silence"]["created_by"] == "alice"
    assert skipped.data["silence"]["comment"] == "upgrading the web tier"
    assert skipped.data["silence"]["ends_at"]

    # Another container is not covered by the silence: it is acted on.
    other = make_job(
        policy=policy,
        alert=make_alert(labels={"alertname": "ContainerUnhealthy", "container": "db", "severity": "critical"}),
    )
    drain()
    other.refresh_from_db()
    assert other.state == Job.State.OK
    assert marker.exists()


@pytest.mark.parametrize(("choice", "state"), [("skip", Job.State.SKIPPED), ("act", Job.State.OK)])
def test_when_no_alertmanager_answers_the_policy_decides_and_the_audit_says_which(
    settings: Any, choice: str, state: str
) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = f"http://127.0.0.1:{free_port()}"
    policy = make_policy(action="log_only", when_silence_unknown=choice)
    job = make_job(policy=policy, alert=make_alert())
    drain()
    job.refresh_from_db()
    assert job.state == state
    unknown = events("silence_unknown", fingerprint=job.alert.fingerprint)[0]
    assert unknown.data["decision"] == choice
    if choice == "skip":
        assert job.skip_reason == "silence_unknown"


def test_an_expired_silence_no_longer_stops_the_action(settings: Any, alertmanager: RunningAlertmanager) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = alertmanager.url
    silence_id = alertmanager.silence(matchers=[_eq("container", "web")], created_by="bob", comment="window")
    assert silences.silence_expire(silence_id=silence_id)
    job = make_job(policy=make_policy(action="log_only"), alert=make_alert())
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK


def test_autoheal_silences_the_alert_while_it_repairs_and_people_are_paged_after_an_ineffective_action(
    settings: Any, alertmanager: RunningAlertmanager
) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = alertmanager.url
    labels = {"alertname": "WebDown", "container": "web-silenced", "severity": "critical"}
    # A budget of one action: after the ineffective one the incident escalates, no second attempt.
    policy = make_policy(
        action="command",
        params={"argv": ["true"]},
        matchers=['alertname="WebDown"'],
        silence_during_action=True,
        verify_within_seconds=6,
        max_actions_per_hour=1,
    )
    job = make_job(policy=policy, alert=make_alert(labels=labels))
    # The alert fires in Alertmanager; its receiver would be paged after the 4 s group_wait.
    alertmanager.post_alert(labels)
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK and job.verify_state == Job.Verify.PENDING
    created = events("silence_created", fingerprint=job.alert.fingerprint)[0]
    ours = next(s for s in alertmanager.silences() if s["id"] == created.data["silence"]["id"])
    assert ours["createdBy"] == "autoheal" and f"job {job.pk}" in ours["comment"]
    assert ours["status"]["state"] == "active"

    # During the repair window (group_wait has long passed) nobody is paged for it.
    time.sleep(5)
    assert not alertmanager.notified("WebDown")

    # The window ends with the alert still firing: ineffective, the silence is expired at once...
    wait_until(lambda: drain() and Job.objects.get(pk=job.pk).verify_state == Job.Verify.INEFFECTIVE, timeout=30)
    drain()
    assert ActionSilence.objects.get(job=job).expired_at is not None
    assert events("silence_expired", fingerprint=job.alert.fingerprint)
    # ...and the people's receiver is notified.
    wait_until(lambda: alertmanager.notified("WebDown"), timeout=20)
    active = [s for s in alertmanager.silences() if s["createdBy"] == "autoheal" and s["status"]["state"] == "active"]
    assert active == []


def test_the_sweeper_expires_a_silence_a_crash_left_behind(settings: Any, alertmanager: RunningAlertmanager) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = alertmanager.url
    policy = make_policy(action="log_only")
    job = make_job(policy=policy, alert=make_alert(), state=Job.State.FAIL)
    # What a worker that died after creating its silence leaves: the silence and its row.
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    url, silence_id = silences.silence_create(
        labels=job.alert.labels, starts_at=now, ends_at=now + timedelta(minutes=10), comment=f"Autoheal job {job.pk}"
    )
    ActionSilence.objects.create(job=job, silence_id=silence_id, alertmanager=url, ends_at=now + timedelta(minutes=10))
    drain()
    state = next(s for s in alertmanager.silences() if s["id"] == silence_id)["status"]["state"]
    assert state == "expired"


def test_the_silence_list_is_cached_for_at_most_five_seconds(
    settings: Any, alertmanager: RunningAlertmanager, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = alertmanager.url
    # A controlled clock for the cache (never a wall-clock assertion); Alertmanager is real.
    clock = {"now": 1000.0}
    monkeypatch.setattr(silences.time, "monotonic", lambda: clock["now"])
    labels = {"alertname": "ContainerUnhealthy", "container": "cache-test"}
    assert silences.silence_matching(labels) is None
    alertmanager.silence(matchers=[_eq("container", "cache-test")], created_by="carol", comment="new")
    clock["now"] += 4.9
    assert silences.silence_matching(labels) is None  # still the cached answer
    clock["now"] += 0.2
    found = silences.silence_matching(labels)
    assert found is not None and found.created_by == "carol"


def test_the_repair_silence_is_expired_as_soon_as_the_action_failed(
    settings: Any, alertmanager: RunningAlertmanager
) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = alertmanager.url
    policy = make_policy(action="command", params={"argv": ["false"]}, silence_during_action=True)
    job = make_job(policy=policy, alert=make_alert())
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.FAIL
    silence_id = events("silence_created", fingerprint=job.alert.fingerprint)[0].data["silence"]["id"]
    state = next(s for s in alertmanager.silences() if s["id"] == silence_id)["status"]["state"]
    assert state == "expired"
    assert events("silence_expired")[0].data["job_state"] == "fail"


def test_the_sweeper_finds_a_silence_whose_id_a_crash_never_recorded(
    settings: Any, alertmanager: RunningAlertmanager
) -> None:
    settings.AUTOHEAL_ALERTMANAGER_URL = alertmanager.url
    job = make_job(policy=make_policy(action="log_only"), alert=make_alert(), state=Job.State.UNKNOWN)
    # The worker died after Alertmanager created the silence, before it recorded the id.
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    _, silence_id = silences.silence_create(
        labels=job.alert.labels,
        starts_at=now,
        ends_at=now + timedelta(minutes=10),
        comment=f"{silences.comment_prefix(job.pk)} restart_container web",
    )
    other = alertmanager.silence(matchers=[_eq("container", "web")], created_by="alice", comment="keep me")
    ActionSilence.objects.create(job=job, silence_id="", alertmanager="", ends_at=now + timedelta(minutes=10))
    drain()
    states = {s["id"]: s["status"]["state"] for s in alertmanager.silences()}
    assert states[silence_id] == "expired"
    assert states[other] == "active"
    assert ActionSilence.objects.get(job=job).expired_at is not None
