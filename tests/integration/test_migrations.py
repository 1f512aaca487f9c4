"""Each service's migrations build exactly the schema its tables declare, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from ordermesh_cli.registry import load_service
from ordermesh_platform.db import create_engine
from ordermesh_platform.migrations import upgrade_to_head, version_table
from ordermesh_platform.service_names import SERVICE_NAMES

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_migrations_match_the_tables_and_rerun_as_a_no_op(
    service: str, any_database: str
) -> None:
    spec = load_service(service)
    await upgrade_to_head(spec.migrations, any_database, spec.name)
    await upgrade_to_head(spec.migrations, any_database, spec.name)  # a second start: nothing
    metadata = __import__(f"ordermesh_{service}.store", fromlist=["metadata"]).metadata

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": version_table(service)}
        )
        return list(compare_metadata(context, metadata))

    engine = create_engine(any_database)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()
