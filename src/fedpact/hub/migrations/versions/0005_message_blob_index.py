"""An index on the blobs messages name, for reclaiming a running task's finished rounds.

``hub.blobgc.reclaim_finished_rounds`` asks, each time a task opens a round, which
messages name the blobs the task still holds; without this index that question reads
every message the task ever relayed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_task_blob", "messages", ["task_id", "blob_sha256"])


def downgrade() -> None:
    op.drop_index("ix_messages_task_blob", table_name="messages")
