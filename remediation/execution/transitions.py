"""The Job state machine's writes: each transition's field updates, in one place.

::

    queued --claim--> running --start--> (action) --ok--> ok
      ^                  |                          \\--fail--> fail
      |                  |                           \\-transient error--> queued (retry, not_before)
      |                  |--not run--> skipped | queued (backoff, not_before)
      \\--lease expired before start--  \\--lease expired after start--> unknown

Claiming is ``leases.job_claim_many`` (it must arbitrate between workers); every other transition
is one ``UPDATE`` here, run in the caller's transaction next to its audit event. The batch forms
(:func:`jobs_start`, :func:`jobs_end`) move many jobs through the same transition in one
``UPDATE``; the caller holds their rows locked and has checked they are still its own. Leaving
``running`` always releases the lease, except into ``unknown``, which keeps the owner's name so the
stalled worker's late outcome can still be recognised and recorded (``outcome.job_finish``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Case, JSONField, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast

from remediation.models import Job

_RELEASED: dict[str, Any] = {"lease_owner": "", "lease_expires_at": None}


def job_requeue(*, job_id: int, not_before: datetime | None = None, **fields: Any) -> int:
    """Back to ``queued`` with the lease released; ``not_before`` delays it (backoff, retry)."""
    if not_before is not None:
        fields["not_before"] = not_before
    return Job.objects.filter(pk=job_id).update(state=Job.State.QUEUED, **_RELEASED, **fields)


def job_end(*, job_id: int, state: str, now: datetime, **fields: Any) -> int:
    """Into a terminal state (ok, fail, skipped), finished ``now``, with the lease released."""
    if state not in (Job.State.OK, Job.State.FAIL, Job.State.SKIPPED):
        raise ValueError(f"not a terminal state a worker ends a job in: {state!r}")
    return Job.objects.filter(pk=job_id).update(state=state, finished_at=now, **_RELEASED, **fields)


def job_lost(*, job_id: int, now: datetime) -> int:
    """Into ``unknown``: its worker stopped answering during the action (owner name kept)."""
    return Job.objects.filter(pk=job_id).update(state=Job.State.UNKNOWN, finished_at=now, lease_expires_at=None)


def jobs_start(*, job_ids: list[int], now: datetime, lease_expires_at: datetime) -> int:
    """``running`` jobs marked as started ``now`` (the action begins), their leases renewed."""
    if not job_ids:
        return 0
    return Job.objects.filter(pk__in=job_ids, state=Job.State.RUNNING).update(
        started_at=now, lease_expires_at=lease_expires_at
    )


def jobs_end(*, results: dict[int, dict[str, Any]], state: str, now: datetime, **fields: Any) -> int:
    """Many jobs into one terminal state in one ``UPDATE``; ``results``: each job's own ``result``."""
    if state not in (Job.State.OK, Job.State.FAIL, Job.State.SKIPPED):
        raise ValueError(f"not a terminal state a worker ends a job in: {state!r}")
    if not results:
        return 0
    return Job.objects.filter(pk__in=list(results)).update(
        state=state, finished_at=now, result=_per_job(results), **_RELEASED, **fields
    )


def _per_job(results: dict[int, dict[str, Any]]) -> Any:
    """Each row's own JSON value in one expression: on PostgreSQL one ``jsonb`` parameter that
    maps the job ids to their values (cheap to build and to bind for any batch size)."""
    if connection.vendor == "postgresql":
        mapping = json.dumps({str(pk): value for pk, value in results.items()}, cls=DjangoJSONEncoder)
        column = f"{connection.ops.quote_name(Job._meta.db_table)}.{connection.ops.quote_name('id')}"
        return RawSQL(f"(%s::jsonb -> ({column})::text)", [mapping], output_field=JSONField())  # noqa: S611  # nosec B611: only quoted names
    per_job = Case(
        *[When(pk=pk, then=Value(value, output_field=JSONField())) for pk, value in results.items()],
        output_field=JSONField(),
    )
    return Cast(per_job, output_field=JSONField())
