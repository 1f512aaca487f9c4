"""Alembic, once for every service: each service keeps only its ``migrations/versions``
and a three-line ``env.py`` that calls :func:`run_migrations`."""

from __future__ import annotations

import asyncio
import zlib

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ordermesh_platform.db import normalize_url
from ordermesh_platform.dependencies import database_failure, reach_database


def version_table(service: str) -> str:
    # One table per service, so services may even share one database without colliding.
    return f"alembic_version_{service}"


def alembic_config(script_location: str, url: str, service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["url"] = url
    config.attributes["service"] = service
    return config


async def upgrade_to_head(script_location: str, url: str, service: str) -> str:
    """Create the database if needed and apply every pending migration; returns the
    revision the database is now at. A database that cannot be reached, or that turns
    the login away, raises :class:`DependencyUnavailable`."""
    config = alembic_config(script_location, url, service)
    await reach_database(url, service)
    try:
        # Alembic is synchronous; env.py runs its own event loop inside this worker thread.
        await asyncio.to_thread(command.upgrade, config, "head")
    except Exception as error:
        failure = database_failure(error, url, service)
        if failure is None:
            raise
        raise failure from error
    return ScriptDirectory.from_config(config).get_current_head() or "base"


def run_migrations(target_metadata: MetaData) -> None:
    """Body of every service's env.py."""
    config = context.config
    url = normalize_url(config.attributes["url"])
    service = config.attributes["service"]
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=target_metadata,
            literal_binds=True,
            version_table=version_table(service),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url.render_as_string(hide_password=False), target_metadata, service))


async def _run_online(url: str, target_metadata: MetaData, service: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    postgres = make_url(url).get_backend_name() == "postgresql"
    lock_key = zlib.crc32(f"ordermesh-migrate-{service}".encode())
    try:
        async with engine.connect() as conn:
            if postgres:
                # Replicas starting together migrate one at a time; the others then find
                # nothing to do.
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key})
                await conn.commit()
            try:
                await conn.run_sync(_run_sync, target_metadata, service)
                await conn.commit()
            finally:
                if postgres:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
                    await conn.commit()
    finally:
        await engine.dispose()


def _run_sync(connection: Connection, target_metadata: MetaData, service: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table(service),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
