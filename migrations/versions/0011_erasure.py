"""erasure: (being written) audit redaction under a grant, salted suppression of
emails and phones

Revision ID: 0011_erasure
Revises: 0010_privacy
Create Date: 2026-12-02 17:30:00
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0011_erasure"
down_revision = "0010_privacy"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
