"""A missing or ambiguous target is a skip, not a failure: a typo never stops remediation.

Against a real dockerd: the containers that do not exist really do not exist, and the restart that
follows is confirmed by the container's StartedAt.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from dashboard.selectors import targets_in_cooldown
from remediation.executors import JobSpec, TargetMissing, docker
from remediation.intake import alert_ingest
from remediation.models import Job, Policy, Switch
from remediation.tests.exec_helpers import drain, events

pytestmark = [pytest.mark.postgres, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def firing(container: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ContainerDown", "container": container},
                "annotations": {},
                "startsAt": timezone.now().isoformat().replace("+00:00", "Z"),
                "fingerprint": uuid.uuid4().hex[:16],
            }
        ],
    }


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def test_ten_missing_containers_leave_the_breaker_closed_and_a_real_restart_still_happens(
    docker_settings: Any, make_container: Any, client: Any
) -> None:
    docker_settings.AUTOHEAL_CIRCUIT_MAX_FAILURES = 5
    Policy.objects.create(
        name="restart-down",
        matchers=['alertname="ContainerDown"'],
        action="restart_container",
        target="{{ labels.container }}",
        cooldown_seconds=300,
        params={"timeout_seconds": 20},
    )
    for index in range(10):
        alert_ingest(payload=firing(f"nosuch-{index}-{uuid.uuid4().hex[:6]}"))
    drain()

    skipped = events("action_skipped")
    assert len(skipped) == 10
    assert {e.data["reason"] for e in skipped} == {"target_missing"}
    assert all("no container named nosuch-" in e.message for e in skipped)
    assert not events("action_started") and not events("action_fail") and not events("action_retry")
    assert not events("circuit_open") and not events("incident_escalated")
    assert set(Job.objects.values_list("state", "skip_reason")) == {("skipped", "target_missing")}
    assert not Switch.objects.filter(circuit_open=True).exists()
    assert targets_in_cooldown(now=timezone.now()) == []

    user = User.objects.create_user(username="ops-viewer", password=None)
    user.groups.add(Group.objects.get_or_create(name="ops")[0])
    client.force_login(user)
    page = client.get("/ops/").content.decode()
    assert "target_missing" in page

    container = make_container(labels={"autoheal.enable": "true"})
    time.sleep(1.5)  # its first health check passes
    before = started_at(container)
    alert_ingest(payload=firing(container.name))
    drain()
    assert [e.target for e in events("action_ok")] == [container.name]
    assert started_at(container) != before


def test_a_missing_container_is_a_target_missing_skip_at_check_and_at_execution(docker_settings: Any) -> None:
    spec = JobSpec(action="restart_container", target=f"no-such-{uuid.uuid4().hex[:8]}", params={})
    with pytest.raises(TargetMissing, match="no container named") as checked:
        docker.check(spec)
    assert checked.value.reason == "target_missing"
    with pytest.raises(TargetMissing):
        docker.execute(spec, timeout=3)


def test_an_id_prefix_of_several_containers_is_an_ambiguous_target(
    docker_settings: Any, make_container: Any, docker_client: Any
) -> None:
    by_prefix: dict[str, list[Any]] = defaultdict(list)
    # Sixteen hex digits: by the pigeonhole principle, 17 containers always share a first digit.
    for _ in range(17):
        created = make_container(labels={"autoheal.enable": "true"}, healthy=None)
        by_prefix[created.id[0]].append(created)
        if len(by_prefix[created.id[0]]) == 2:
            prefix = created.id[0]
            break
    with pytest.raises(TargetMissing) as checked:
        docker.check(JobSpec(action="restart_container", target=prefix, params={}))
    assert checked.value.reason == "ambiguous_target"
    # Its full name is not ambiguous.
    docker.check(JobSpec(action="restart_container", target=by_prefix[prefix][0].name, params={}))
