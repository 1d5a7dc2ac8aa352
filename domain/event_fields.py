"""What each stored field of the lesson slot's events means: the catalogue of events
(docs/events.md, generated from the code) lists it beside each field."""

EVENT_FIELDS: dict[str, str] = {
    "timestamp": "when the event was recorded (UTC)",
    "originator_topic": "the aggregate's class (first event only)",
    "request_id": "the idempotency key of the request that caused it",
    "actor": "who sent the command (a token's actor, a CLI user, the worker)",
    "correlation_id": "the batch it came in, if any",
    "source": "where the command came from: api, cli, import, worker",
    "as_sent": "the key's parts as the caller spelled them (short text)",
    "provider_id": "the key: the provider, a lowercase UUID",
    "school_id": "the key: the school",
    "lesson_date": "the key: the date",
    "time_slot": "the key: HH:MM-HH:MM, or on-demand-<request id>",
    "attempt": "the attempt it starts, ends or concerns (1, 2, ...)",
    "details": "what to generate, without the students (subject, topic, duration, ...)",
    "students": "each student's part (id, grade, reading level, IEP goals, accommodations), "
    "sealed under the student's key and the lesson date's",
    "fingerprint": "a digest of the command, so a retry under its request id is a replay",
    "reason": "why (a regeneration, a cancellation, a failure)",
    "content": "the generated (or imported) lesson as JSON, sealed under a key of its own, "
    "itself sealed under every student's key and the lesson date's",
    "model": "the model that generated it",
    "legacy_id": "the row's id in the old table",
    "legacy_created_at": "the row's creation time in the old table",
    "legacy_updated_at": "the row's last update in the old table",
    "flags": "what the import flagged for review (e.g. start_only_slot)",
    "command": "the command turned away",
    "message": "the answer the caller got",
    "holder_request_id": "the request holding the slot when it was turned away",
    "holder_actor": "who holds the slot",
    "holder_status": "the slot's status then",
}
"""What each stored field of the events means (docs/events.md lists them)."""
