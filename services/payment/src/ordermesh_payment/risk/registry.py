"""The model registry in payment's database: every registered artifact, one champion
(the model that decides), challengers, and the champions of before (for rollback).

Payment-service polls the champion's version and swaps models when it changes, so a
promotion or a rollback is picked up without a restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_payment.risk.models import Artifact, ArtifactError, parse_artifact
from ordermesh_payment.risk.scoring import RiskScorer
from ordermesh_platform.db import Transactions, insert_rows
from ordermesh_platform.errors import FailedPrecondition, NotFound
from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
RETIRED = "retired"


def risk_model_table(metadata: MetaData) -> Table:
    return Table(
        "risk_models",
        metadata,
        Column("version", String(64), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("feature_schema_hash", String(64), nullable=False),
        Column("role", String(16), nullable=False),  # champion, challenger, retired
        Column("artifact", Text, nullable=False),  # the artifact's JSON, as saved
        Column("registered_at", DateTime(timezone=True), nullable=False),
        # When it last became champion: rollback returns to the one before.
        Column("promoted_at", DateTime(timezone=True), nullable=True),
    )


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    kind: str
    feature_schema_hash: str
    role: str
    registered_at: datetime
    promoted_at: datetime | None


class ModelRegistry:
    def __init__(self, table: Table) -> None:
        self.table = table
        t = table
        self._champion_version = select(t.c.version).where(t.c.role == CHAMPION)
        self._champion = select(t.c.version, t.c.artifact).where(t.c.role == CHAMPION)
        self._by_version = select(t).where(t.c.version == bindparam("version"))
        self._live = (
            select(t.c.version, t.c.role)
            .where(t.c.role.in_((CHAMPION, CHALLENGER)))
            .order_by(t.c.registered_at, t.c.version)
        )

    async def register(self, conn: AsyncConnection, artifact: Artifact) -> bool:
        """Add the artifact as a challenger; False when that version is there already."""
        row = {
            "version": artifact.version,
            "kind": artifact.kind,
            "feature_schema_hash": artifact.feature_schema_hash,
            "role": CHALLENGER,
            "artifact": artifact.text(),
            "registered_at": datetime.now(UTC),
            "promoted_at": None,
        }
        written = await insert_rows(
            conn, self.table, [row], conflict=("version",), returning=("version",)
        )
        return bool(written)

    async def retire_oldest_challengers(self, conn: AsyncConnection, keep: int) -> list[str]:
        """Retire the challengers beyond the ``keep`` most recently registered; returns
        the versions retired. Challengers registered on a schedule do not pile up."""
        t = self.table
        challengers = (
            await conn.execute(
                select(t.c.version)
                .where(t.c.role == CHALLENGER)
                .order_by(t.c.registered_at.desc(), t.c.version.desc())
            )
        ).scalars()
        doomed = list(challengers)[keep:]
        if doomed:
            await conn.execute(update(t).where(t.c.version.in_(doomed)).values(role=RETIRED))
        return doomed

    async def retire(self, conn: AsyncConnection, version: str) -> str:
        """Take a challenger out of shadowing (and out of its A/B share); returns the
        role it had. The champion cannot be retired: promote another model instead."""
        t = self.table
        role = (
            await conn.execute(select(t.c.role).where(t.c.version == version))
        ).scalar_one_or_none()
        if role is None:
            raise NotFound("risk model", version)
        if role == CHAMPION:
            raise FailedPrecondition(
                ErrorReason.CHAMPION_NOT_RETIRABLE,
                f"{version} is the champion: promote another model (or roll back) first",
                {"version": version},
            )
        if role == CHALLENGER:
            await conn.execute(update(t).where(t.c.version == version).values(role=RETIRED))
        return str(role)

    async def models(self, conn: AsyncConnection) -> list[RegisteredModel]:
        t = self.table
        rows = await conn.execute(
            select(t.c.version, t.c.kind, t.c.feature_schema_hash, t.c.role,
                   t.c.registered_at, t.c.promoted_at).order_by(t.c.registered_at, t.c.version)
        )  # fmt: skip
        return [RegisteredModel(*row) for row in rows]

    async def live(self, conn: AsyncConnection) -> tuple[tuple[str, str], ...]:
        """(version, role) of the champion and the challengers, oldest first: what a
        service polls to see that something changed."""
        rows = await conn.execute(self._live)
        return tuple((r.version, r.role) for r in rows)

    async def artifact_text(self, conn: AsyncConnection, version: str) -> str:
        row = (await conn.execute(self._by_version, {"version": version})).first()
        if row is None:
            raise NotFound("risk model", version)
        return str(row.artifact)

    async def champion_version(self, conn: AsyncConnection) -> str | None:
        return (await conn.execute(self._champion_version)).scalar_one_or_none()

    async def champion(self, conn: AsyncConnection, schema_hash: str) -> Artifact | None:
        """The champion's artifact, None when there is none; ArtifactError when it
        cannot be used here."""
        row = (await conn.execute(self._champion)).first()
        if row is None:
            return None
        return parse_artifact(row.artifact, f"registry:{row.version}", schema_hash)

    async def artifact(self, conn: AsyncConnection, version: str) -> Artifact:
        """A registered artifact; NotFound, or FailedPrecondition when it does not load."""
        row = (await conn.execute(self._by_version, {"version": version})).first()
        if row is None:
            raise NotFound("risk model", version)
        try:
            return parse_artifact(row.artifact, f"registry:{version}")
        except ArtifactError as error:
            raise FailedPrecondition(
                ErrorReason.MODEL_UNUSABLE, str(error), {"version": version}
            ) from error

    async def promote(self, conn: AsyncConnection, version: str) -> str | None:
        """Make ``version`` the champion; returns the champion it replaced. Call in a
        transaction: the roles change together."""
        await self.artifact(conn, version)  # refuses what is missing or does not load
        previous = await self.champion_version(conn)
        if previous == version:
            return previous
        t = self.table
        await conn.execute(update(t).where(t.c.role == CHAMPION).values(role=RETIRED))
        await conn.execute(
            update(t)
            .where(t.c.version == version)
            .values(role=CHAMPION, promoted_at=datetime.now(UTC))
        )
        return previous

    async def rollback(self, conn: AsyncConnection) -> tuple[str, str]:
        """Make the champion before the current one champion again; returns (the one
        rolled back, the one restored)."""
        t = self.table
        current = await self.champion_version(conn)
        if current is None:
            raise FailedPrecondition(ErrorReason.NO_CHAMPION, "there is no champion to roll back")
        previous = (
            await conn.execute(
                select(t.c.version)
                .where(t.c.role == RETIRED, t.c.promoted_at.is_not(None))
                .order_by(t.c.promoted_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if previous is None:
            raise FailedPrecondition(
                ErrorReason.NO_PREVIOUS_CHAMPION, f"no champion before {current}"
            )
        await self.promote(conn, previous)
        await conn.execute(update(t).where(t.c.version == current).values(promoted_at=None))
        return current, previous


class RegistryWatch:
    """Keeps a scorer on the registry's champion and challengers: ``check`` (run every
    few seconds) reloads them when their versions or roles changed. An artifact that
    cannot be used here is logged and left out (an unusable champion: the scorer
    keeps the one it has)."""

    def __init__(self, registry: ModelRegistry, sessions: Transactions, scorer: RiskScorer) -> None:
        self._registry = registry
        self._sessions = sessions
        self._scorer = scorer
        self._seen: tuple[tuple[str, str], ...] = ()

    async def check(self) -> None:
        async with self._sessions() as conn:
            live = await self._registry.live(conn)
            if not live or live == self._seen:
                return
            texts = {v: await self._registry.artifact_text(conn, v) for v, _ in live}
        # Parsed with the connection given back, off the event loop: loading a model is
        # CPU work, and a unit of work that outlives its budget is cut off.
        schema = self._scorer.features.definition.schema_hash
        loaded: dict[str, Artifact] = {}
        for version, text in texts.items():
            try:
                loaded[version] = await asyncio.to_thread(
                    parse_artifact, text, f"registry:{version}", schema
                )
            except ArtifactError as error:
                log.error("risk model unusable here, left out", error=str(error))
        champions = [v for v, role in live if role == CHAMPION and v in loaded]
        challengers = [loaded[v] for v, role in live if role == CHALLENGER and v in loaded]
        champion = loaded[champions[0]] if champions else self._scorer.model
        self._scorer.use_models(champion, challengers)
        # Only now: a check that failed before this point is tried again next time.
        self._seen = live
        log.info(
            "risk models in use",
            champion=champion.version if champion else None,
            challengers=[c.version for c in challengers],
        )
