"""The HTTP baseline: the endpoint a Python team would write for the old racing table.

A pydantic body with the ledger's request fields, a bearer token, one INSERT through a
psycopg pool, 409 on the unique violation; served by uvicorn's defaults, as
`uvicorn benchmarks.plain_api:app --workers N`. As plain as the INSERT baseline: no
idempotency, no events, no read model, no metrics, uvicorn's access log for a log.

Configured by the environment: PLAIN_API_DATABASE_URL, PLAIN_API_TABLE, PLAIN_API_TOKEN.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

TABLE = os.environ.get("PLAIN_API_TABLE", "ai_generated_lessons")
INSERT = (
    f"INSERT INTO {TABLE} (provider_id, school_id, lesson_date, time_slot, session_data) "
    "VALUES (%s, %s, %s, %s, %s) RETURNING id"
)
pool = ConnectionPool(
    os.environ.get("PLAIN_API_DATABASE_URL", ""), min_size=4, max_size=10, open=False
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    pool.open(wait=True)
    yield
    pool.close()


app = FastAPI(lifespan=lifespan)
bearer = HTTPBearer()


class LessonRequest(BaseModel):
    provider_id: UUID
    school_id: str | None = Field(default=None, max_length=128)
    lesson_date: date
    time_slot: str = Field(min_length=1, max_length=64)
    request_id: str = Field(min_length=1, max_length=128)
    details: dict[str, Any] = Field(default_factory=dict)


class Created(BaseModel):
    id: int


def authorised(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> None:
    if not secrets.compare_digest(credentials.credentials, os.environ["PLAIN_API_TOKEN"]):
        raise HTTPException(status_code=401, detail="invalid token")


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/v1/lessons/requests", status_code=201, dependencies=[Depends(authorised)])
def request_lesson(body: LessonRequest) -> Created:
    row = (body.provider_id, body.school_id, body.lesson_date, body.time_slot, Jsonb(body.details))
    try:
        with pool.connection() as connection:
            created = connection.execute(INSERT, row).fetchone()
    except psycopg.errors.UniqueViolation:
        raise HTTPException(status_code=409, detail="this slot is already taken") from None
    assert created is not None
    return Created(id=created[0])
