"""One route planner: the simulator's verdict is what ingest queues, for any policies and alerts."""

from __future__ import annotations

import json
import uuid
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from remediation.intake import alert_ingest
from remediation.models import Alert, Job, Policy
from remediation.policy_review import policy_try
from remediation.simulation import payload_simulate

pytestmark = pytest.mark.django_db

NAMES = ["alertname", "container", "job", "env"]
VALUES = ["A", "B", "web", "db", "", "x" * 130, "\x00"]


def body(alerts: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {},
                "startsAt": "2026-12-03T09:00:00Z",
                "fingerprint": f"fp{index}-{uuid.uuid4().hex[:8]}",
            }
            for index, labels in enumerate(alerts)
        ],
    }


_matcher = st.builds(
    lambda name, op, value: f'{name}{op}"{value}"',
    st.sampled_from(NAMES),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.sampled_from(["A", "B", "web", "db", "", ".+", "w.*"]),
)
_target = st.sampled_from(
    ["{{ labels.container }}", "{{ labels.job }}-{{ labels.env }}", "fixed", "{{ labels.container }}{{ labels.env }}"]
)
_policy = st.fixed_dictionaries(
    {
        "matchers": st.lists(_matcher, min_size=1, max_size=3),
        "target": _target,
        "action": st.sampled_from(["restart_container", "log_only", "stop_container"]),
        "enabled": st.booleans(),
        "dry_run": st.booleans(),
        "priority": st.integers(min_value=1, max_value=3),
    }
)
_labels = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=4)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policies=st.lists(_policy, max_size=4), alerts=st.lists(_labels, min_size=1, max_size=3))
def test_the_simulators_verdict_is_what_ingest_queues(policies: list[dict[str, Any]], alerts: list[dict]) -> None:
    Job.objects.all().delete()
    Alert.objects.all().delete()
    Policy.objects.all().delete()
    seen = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    for index, fields in enumerate(policies):
        Policy.objects.create(name=f"p{index}", **fields)
    payload = body(alerts)

    outcomes = payload_simulate(payload=payload, check=False)
    predicted_jobs = sorted((o.fingerprint, o.policy, o.target) for o in outcomes if o.queued)
    predicted_skips = sorted((o.fingerprint, o.policy, o.reason) for o in outcomes if o.verdict == "skip")
    predicted_unrouted = sorted(o.fingerprint for o in outcomes if o.verdict == "no_policy")

    result = alert_ingest(payload=payload)

    queued = sorted(Job.objects.values_list("alert__fingerprint", "policy_name", "target"))
    assert queued == predicted_jobs
    assert result.jobs == len(predicted_jobs)
    skipped = sorted(
        (e.fingerprint, e.policy, e.data["reason"])
        for e in AuditEvent.objects.filter(kind="action_skipped", id__gt=seen)
    )
    # With no history and the switch on, the only skips are routing's: the simulator names them.
    assert skipped == predicted_skips
    assert sorted(AuditEvent.objects.filter(kind="no_policy", id__gt=seen).values_list("fingerprint", flat=True)) == (
        predicted_unrouted
    )


def test_a_target_over_the_limit_is_a_skip_in_the_simulator_as_in_ingest() -> None:
    Policy.objects.create(name="long", matchers=['alertname="A"'], action="log_only", target="{{ labels.container }}")
    payload = body([{"alertname": "A", "container": "c" * 256}])
    [outcome] = payload_simulate(payload=payload, check=False)
    assert (outcome.verdict, outcome.reason, outcome.queued) == ("skip", "not_allowed", False)
    assert "longer than 255" in outcome.message
    assert alert_ingest(payload=payload).jobs == 0


def test_try_this_policy_uses_the_same_limit() -> None:
    policy = Policy.objects.create(
        name="long", matchers=['alertname="A"'], action="log_only", target="{{ labels.container }}", enabled=False
    )
    trial = policy_try(policy=policy, payload=body([{"alertname": "A", "container": "c" * 256}]), check=False)
    [fit] = trial.fits
    assert fit.matches and fit.target == "" and "longer than 255" in fit.problem


@pytest.mark.docker
def test_the_simulator_says_a_missing_container_would_be_skipped(docker_settings: Any, tmp_path: Path) -> None:
    Policy.objects.create(name="restart", matchers=['alertname="A"'], action="restart_container")
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(body([{"alertname": "A", "container": "nosuch"}])))
    out = StringIO()
    call_command("autoheal_simulate", str(path), stdout=out)
    line = out.getvalue().strip()
    assert "SKIP" in line and "target_missing: no container named nosuch" in line
    assert "RUN" not in line


def test_the_simulator_says_when_it_could_not_check_the_target(settings: Any) -> None:
    # A Docker socket path where nothing listens: Docker does not answer.
    settings.DOCKER_HOST = f"unix:///tmp/autoheal-no-docker-{uuid.uuid4().hex[:8]}.sock"
    Policy.objects.create(name="restart", matchers=['alertname="A"'], action="restart_container")
    [outcome] = payload_simulate(payload=body([{"alertname": "A", "container": "web"}]))
    assert outcome.verdict == "run" and outcome.queued
    assert "could not check the target" in outcome.message
