from ordermesh_notification.store import metadata
from ordermesh_platform.migrations import run_migrations

run_migrations(metadata)
