"""The real PostgreSQL turning a login away is one line naming it, the URL and why."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from ordermesh_platform.dependencies import DependencyUnavailable, reach_database
from tests.support.postgres import SERVER_URL, unique_name

pytestmark = pytest.mark.integration


async def test_a_missing_role_is_one_line_naming_postgresql_the_url_and_the_role() -> None:
    role = unique_name("nobody")
    server = make_url(SERVER_URL)
    url = server.set(username=role, password="s3cret", database="ordermesh_order")
    with pytest.raises(DependencyUnavailable) as refused:
        await reach_database(url.render_as_string(hide_password=False), "order")
    line = str(refused.value)
    assert line.startswith(f"order: cannot use PostgreSQL at postgresql://{role}:***@")
    assert f'role "{role}" does not exist' in line
    assert "s3cret" not in line
