"""models: each model's scoring form, what workers classify with, without scikit-learn

Workers imported scikit-learn, SciPy and skops to rebuild a model's skops artifact, and each
process held 270-330 MB. A model's scoring form (`models.scoring`: numpy arrays in an `.npz`,
docingest/model/scoring.py) is all that classifying needs of it; registration makes it from the
artifact and checksums it (`scoring_sha256`), as it does the artifact.

The models registered before get theirs here, converted from their artifacts as registration
converts them (so this migration imports scikit-learn, if there is any model): each artifact is
checked against its checksum first. One that does not match it, or that cannot be converted (an
artifact this scikit-learn cannot rebuild, a pipeline the scorer cannot reproduce), keeps no
scoring form, with a warning naming it: workers refuse it as they refuse a corrupted model (they
serve the last model they loaded, and count the refusal), and activation refuses it.

Undoing it deletes nothing that is not rebuilt (upgrading again converts the artifacts), so it
declares no `LOSES`.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from docingest.migrations import helpers
from docingest.model import registry

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger(__name__)

MODELS = sa.table(
    "models",
    sa.column("version", sa.String),
    sa.column("artifact", sa.LargeBinary),
    sa.column("sha256", sa.String),
    sa.column("scoring", sa.LargeBinary),
    sa.column("scoring_sha256", sa.String),
)


def upgrade() -> None:
    helpers.add_columns(
        "models",
        sa.Column("scoring", sa.LargeBinary(), nullable=True),
        sa.Column("scoring_sha256", sa.String(64), nullable=True),
    )
    bind = op.get_bind()
    versions = bind.execute(sa.select(MODELS.c.version).order_by(MODELS.c.version)).scalars()
    for version in list(versions):  # one artifact in memory at a time
        artifact, digest = bind.execute(
            sa.select(MODELS.c.artifact, MODELS.c.sha256).where(MODELS.c.version == version)
        ).one()
        form = _scoring_form(version, bytes(artifact), digest)
        if form is not None:
            bind.execute(
                MODELS.update()
                .where(MODELS.c.version == version)
                .values(scoring=form, scoring_sha256=registry.checksum(form))
            )


def _scoring_form(version: str, artifact: bytes, digest: str) -> bytes | None:
    if registry.checksum(artifact) != digest:
        logger.warning(
            "model %s: artifact does not match its registered sha256 checksum; no scoring form "
            "made, workers will refuse it",
            version,
        )
        return None
    try:
        return registry.convert(artifact, f"model {version}")[1]
    except registry.ArtifactRefusedError as error:
        logger.warning("%s; no scoring form made, workers will refuse it", error)
        return None


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("scoring_sha256")
        batch.drop_column("scoring")
