"""The live stream of the audit trail: ``GET /events`` as Server-Sent Events.

Each committed audit event goes out as ``id: <audit id>`` / ``event: audit`` / ``data: <event
JSON>``; a client that reconnects with ``Last-Event-ID`` gets exactly the events it missed.

How it holds together (the reasons matter more than the code):

* The audit table is the bus; pub/sub is only the doorbell. ``audit_record`` takes a chain lock
  that is held until commit, so audit ids are handed out in commit order: once event N is
  visible, every event below N that will ever exist is visible too. Reading ``id > last`` from the
  table therefore never skips anything, and a gap in the ids is a rolled-back write, nothing more.
* After commit, the writer (web or worker process) rings the doorbell: a Redis publish when
  ``REDIS_URL`` is set, a direct in-process hand-over otherwise. Each web process runs one
  :class:`AuditFeed` that turns doorbells into deliveries in strict id order: the next id is
  taken from the message itself, anything else (a gap, a message from another process that
  overtook an earlier one, a lost message, Redis being down) is read from the table. A cheap poll
  after ``AUTOHEAL_STREAM_POLL_SECONDS`` without a doorbell covers doorbells that never rang.
  Under a steady stream, events are handed to the clients in batches at most every 50 ms, so the
  per-client cost (a task switch and a socket write) does not grow with the event rate.
* Each client has a bounded queue of shared, pre-encoded frames. A client that falls behind
  (django-eventstream issue #160: its own queue holds 10 events and then drops them silently) is
  never skipped: the queue is dropped and the client catches up from the audit table from the
  last id it was sent. A client further behind than the replay window, or resuming from an id
  that is no longer in the table, is told so with a ``stream-reset`` and continues live.

django-eventstream supplies the pieces that fit: the storage interface (:class:`AuditStorage`,
configured as ``EVENTSTREAM_STORAGE_CLASS``: replay straight from the audit table, no second copy),
the channel manager (:class:`AuditChannelManager`, ``EVENTSTREAM_CHANNELMANAGER_CLASS``: only ops
and admin may read; the library's default lets anyone), its ``Listener`` (a client's wake-up
event), the SSE encoders and its conventions (``stream-open`` with padding, ``keep-alive``,
``stream-reset``, ``stream-error`` with id ``error``). Its own view is not used: it writes ids as
``channel:id`` (the contract is the bare audit id), encodes every event once per client, drops
events past 10 per client, can resend events when one arrives during its initial read, and its
Redis listener hands events over in arrival order and is not restarted if Redis goes away.

The modules:

* ``frames``: the SSE frames, the ``kind``/``alertname`` filter and ``Last-Event-ID`` parsing.
* ``storage``: the audit table as django-eventstream's storage, the channel manager, and the
  stream's reads (on their own threads), including the backlog a page shows first.
* ``listener``: one connected client and its bounded queue.
* ``feed``: the per-process feed that turns doorbells into deliveries in id order.
* ``publish``: the after-commit hook that rings the doorbell.
* ``views``: ``GET /events``.
"""
