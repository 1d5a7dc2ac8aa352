"""The HTTP API (FastAPI): `create_app()` wires the ledger, the token and idempotency
stores, metrics, JSON logs and problem details together."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters import logs
from adapters.audit.ledger_audit import open_audit
from adapters.auth.bearer import BearerTokens
from adapters.auth.jwt_tokens import JwtVerifier
from adapters.eventstore import open_ledger
from adapters.http import (
    batches,
    commands,
    history,
    lesson_events,
    operations,
    pages,
    problems,
    proofs,
    reads,
    students,
)
from adapters.http.metrics import Metrics
from adapters.http.problems import ApiProblem, Problem, problem_response
from adapters.keys.erasure import DailyRetention, Erasures
from adapters.keys.keyed_ids import KeyedIds
from adapters.keys.keyfile import LedgerKeys, open_keys
from adapters.keys.sealing import sealer_of
from adapters.postgres.rights import check_rights
from adapters.randomness import random_uuid
from adapters.read_model import open_read_model
from adapters.read_routing import open_reads
from adapters.release import VERSION
from adapters.settings import Settings
from adapters.storage.database import Database
from adapters.storage.idempotency import IdempotencyStore
from adapters.storage.page_runs import PageRuns
from adapters.storage.sqlstore import SqlStore
from adapters.storage.tokens import TokenStore
from adapters.storage.usage import SqlUsageStore
from adapters.worker import start_worker_in_background
from projections.active_runner import ActiveRunner

log = logging.getLogger("lesson_ledger.http")
UNROUTED = "(no route)"
"""Logged for a request no route took: its path may hold anything, a student's id too."""
COMMAND_THREADS = 40
"""Threads that run commands (as many as the thread pool a plain endpoint would use)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API on the database the settings name; resources open with the app's lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database.from_url(settings.database_url)
        # The keys and the JWT settings first: a server that cannot have them starts nothing.
        keys = ledger_keys(settings, database)
        jwt = JwtVerifier.from_settings(settings.jwt)
        ledger = open_ledger(database)
        check_rights(database)  # with table creation off, a grant missing is one line now
        read_model = open_read_model(database, ledger=ledger)
        reads = open_reads(database, read_model, ledger)  # the read replica, if any
        reads.on_read = lambda source: app.state.metrics.reads.labels(source).inc()
        sql = SqlStore(database)
        app.state.database = database
        app.state.ledger = ledger
        app.state.command_threads = ThreadPoolExecutor(
            COMMAND_THREADS, thread_name_prefix="ledger-command"
        )
        erasures = app.state.erasures = Erasures(sealer_of(ledger), database)
        app.state.read_model = read_model
        app.state.reads = reads
        app.state.tokens = TokenStore(sql, cache_seconds=settings.token_cache_seconds)
        app.state.bearer = BearerTokens(app.state.tokens, jwt)
        app.state.idempotency = IdempotencyStore(sql)
        app.state.keyed_ids = KeyedIds(keys["hash_key"])
        app.state.generation_usage = SqlUsageStore(sql)  # token totals for /metrics
        app.state.page_runs = PageRuns(sql)  # verifies started from the pages
        audit = app.state.audit = open_audit(database, ledger)
        # The server keeps the read model and the log's tree current by itself; with
        # several server processes one follower of each is active, the others stand by.
        followers: list[ActiveRunner] = []
        if settings.follow_projections:
            followers.append(read_model.start_following())
            followers.append(audit.start_following(settings.checkpoint_every_seconds))
        worker = (
            start_worker_in_background(database, ledger=ledger) if settings.runs_worker() else None
        )
        retention = None
        if settings.retention_days is not None:
            retention = DailyRetention(erasures, settings.retention_days).start()
        try:
            yield
        finally:
            if retention is not None:
                retention.stop()
            if worker is not None:
                await asyncio.to_thread(worker.stop)
            for follower in followers:
                follower.stop()
            audit.close()
            reads.close()
            read_model.close()
            app.state.command_threads.shutdown(wait=True)
            sql.close()
            ledger.close()
            app.state.bearer.close()

    app = FastAPI(
        dependencies=[Depends(problems.known_query_parameters_only)],
        title="lesson-ledger",
        version=VERSION,
        summary="An event-sourced ledger for AI-generated lessons.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    problems.install(app)
    app.add_middleware(RequestContext, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        # Bearer tokens only: no credentials, so no cookie (the pages' session) crosses.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID"],
            max_age=600,
        )
    app.include_router(lesson_events.router)  # before /v1/lessons/{lesson_id}
    app.include_router(commands.router)
    app.include_router(batches.router)
    app.include_router(history.router)
    app.include_router(students.router)
    app.include_router(reads.router)
    app.include_router(proofs.router)
    app.include_router(operations.router)
    pages.install(app)
    document_problems(app)
    return app


def document_problems(app: FastAPI) -> None:
    """Add the Problem schema the error responses refer to, to the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _, definitions = models_json_schema(
                [(Problem, "serialization")], ref_template="#/components/schemas/{model}"
            )
            document["components"]["schemas"].update(definitions["$defs"])
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def ledger_keys(settings: Settings, database: Database) -> LedgerKeys:
    """The ledger's keys: from LESSON_LEDGER_KEY_FILE, or the file beside a SQLite database."""
    return open_keys(
        key_file=settings.key_file, database_kind=database.kind, database_path=database.path
    )


def create_app_from_env() -> FastAPI:
    """The factory `lesson-ledger serve` gives uvicorn (settings from the environment)."""
    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings)


def logged_path(scope: Scope) -> str:
    """The route a request took, not its path: a path may hold a student's id. A path no
    route took is not logged either (`/v1/student/ada/erasure`, a typo)."""
    route = scope.get("route")  # the API's routes (FastAPI's) say which they are
    if route is not None:
        return str(route.path_format)
    # Starlette's own (the OpenAPI document, the docs, the static files) only their
    # endpoint: found among the app's routes (few requests come this way).
    endpoint, app = scope.get("endpoint"), scope.get("app")
    if endpoint is not None and app is not None:
        for candidate in app.router.routes:
            if endpoint in (getattr(candidate, "endpoint", None), getattr(candidate, "app", None)):
                return str(candidate.path_format)
    return UNROUTED


CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""A caller's X-Request-ID is kept when short and plain; otherwise the server makes one."""


class RequestContext:
    """Give each request an id (or keep the caller's X-Request-ID), refuse a body over the
    limit (413, whether it says its length or streams it), log one JSON line for the
    request, and return the id in a header. One plain ASGI layer: Starlette's
    BaseHTTPMiddleware runs every request in a task group of its own, and each layer
    wraps every message again."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        request_id = given if CALLER_REQUEST_ID.fullmatch(given) else random_uuid().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        token = logs.request_id_var.set(request_id)
        try:
            replay = await self.body_within_limit(scope, receive)
            if replay is None:
                await self.too_large(scope, receive, send_with_id)
            else:
                await self.app(scope, replay, send_with_id)
        finally:
            logs.request_id_var.reset(token)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": logged_path(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )

    async def body_within_limit(self, scope: Scope, receive: Receive) -> Receive | None:
        """The body read up to the limit before the app sees it (it is at most 1 MiB), so a
        body over the limit is refused before anything is parsed or written: a `receive`
        that replays it, or None when it is over."""
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return None
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return None
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = ApiProblem(
            413, "too-large", "Body too large", f"the body is over {self.max_bytes} bytes"
        )
        await problem_response(problem)(scope, receive, send)
