"""Execution services: claim a job, decide under the guards, run the action, finish, verify.

The worker calls these; each state change writes its audit event in the same transaction.

Concurrency: a job is claimed in a short transaction (``select_for_update(skip_locked=True)`` on
PostgreSQL, a conditional UPDATE that must touch one row elsewhere) and the claim commits before
anything else. The guards are decided again under the switch row's lock, and the action is marked
started in that same transaction, so two workers can never both spend the last unit of a budget or
of the circuit breaker. No lock is held while the action runs: the worker only renews its lease.

The modules, in the order a job meets them:

* ``leases``: claim a job (two workers never get the same one), renew its lease while the action
  runs, and settle the jobs of a worker that died.
* ``facts``: the rows as plain data for the pure decision and the executors, and the decision
  itself read from them (no writes).
* ``run``: decide under the guards, mark the action started, execute it.
* ``outcome``: how a claimed job ends: skipped, delayed or dry run, or the action's outcome (ok,
  retry, fail), and the breaker opening as soon as a limit is reached.
* ``verify``: close the loop once the alert resolves or the window passes, and queue the next
  attempt or escalate.
"""
