"""Throw-away databases on the real PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid

import asyncpg

SERVER_URL = os.environ.get("ORDERMESH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def database_url(name: str) -> str:
    return f"{SERVER_URL}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)


async def admin_execute(sql: str) -> None:
    conn = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drop_databases_like(prefix: str) -> None:
    conn = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
        )
        for row in rows:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()
