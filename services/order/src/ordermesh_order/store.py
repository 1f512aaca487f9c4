"""Order tables and the queries the domain needs."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
