"""Admission and blob read rights: membership status, shared blobs, private uploads owned per user;
indexes for the stored-bytes quota.

Memberships made before admission existed were admissions, so ``status`` defaults to
ADMITTED. Blobs the task's creator uploaded were how the global model reached the
participants, so they become ``shared``; everything else stays private to its uploader and
the creator. An upload session now belongs to the user who opened it, so the unique key of
``uploads`` gains ``created_by``; the table is rebuilt with its rows, so unfinished uploads
stay resumable across the upgrade.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), server_default="ADMITTED", nullable=False))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shared", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(batch_op.f("ix_blobs_uploaded_by"), ["uploaded_by"], unique=False)
    op.execute(
        "UPDATE blobs SET shared = TRUE "
        "WHERE uploaded_by = (SELECT tasks.creator_id FROM tasks WHERE tasks.id = blobs.task_id)"
    )

    op.create_table(
        "uploads_v2",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("private", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "sha256", "created_by"),
    )
    op.execute(
        "INSERT INTO uploads_v2 (id, task_id, sha256, size, created_by, private, created_at) "
        "SELECT id, task_id, sha256, size, created_by, FALSE, created_at FROM uploads"
    )
    op.drop_table("uploads")
    op.rename_table("uploads_v2", "uploads")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_uploads_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_uploads_created_by"), ["created_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_uploads_created_by"))
        batch_op.drop_index(batch_op.f("ix_uploads_task_id"))
    op.create_table(
        "uploads_v1",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "sha256"),
    )
    # Two users' sessions for one content cannot both survive the old key: keep the oldest.
    op.execute(
        "INSERT INTO uploads_v1 (id, task_id, sha256, size, created_by, created_at) "
        "SELECT id, task_id, sha256, size, created_by, created_at FROM uploads u "
        "WHERE NOT EXISTS (SELECT 1 FROM uploads o WHERE o.task_id = u.task_id AND o.sha256 = u.sha256 "
        "AND (o.created_at < u.created_at OR (o.created_at = u.created_at AND o.id < u.id)))"
    )
    op.drop_table("uploads")
    op.rename_table("uploads_v1", "uploads")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_uploads_task_id"), ["task_id"], unique=False)
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_uploaded_by"))
        batch_op.drop_column("shared")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_column("decided_at")
        batch_op.drop_column("status")
