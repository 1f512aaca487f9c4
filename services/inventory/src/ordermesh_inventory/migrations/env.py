from ordermesh_inventory.store import metadata
from ordermesh_platform.migrations import run_migrations

run_migrations(metadata)
