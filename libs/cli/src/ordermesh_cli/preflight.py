"""What `ordermesh up` checks before it starts anything: a PostgreSQL server or a Kafka
broker it was pointed at must answer, else one line says which, where and why, instead
of four services failing with tracebacks in their log files."""

from __future__ import annotations

from ordermesh_cli.mesh import MeshConfig
from ordermesh_messaging.reachability import check_kafka
from ordermesh_platform.dependencies import reach_database
from ordermesh_platform.service_names import SERVICE_NAMES


async def check_dependencies(config: MeshConfig) -> None:
    """Raise ``DependencyUnavailable`` for the first dependency that does not answer."""
    if config.postgres:
        for name in SERVICE_NAMES:  # creates the databases the services would create
            await reach_database(config.database_url(name), name)
    if config.kafka:
        await check_kafka(config.kafka)
