from ordermesh_order.store import metadata
from ordermesh_platform.migrations import run_migrations

run_migrations(metadata)
