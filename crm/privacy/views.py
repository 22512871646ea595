"""Data-subject requests: the register, the client card's privacy section, exports,
restriction and erasure.

Sections of this module: register, card section, export, restriction and erasure.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("privacy", __name__, template_folder="templates")

# --- register --------------------------------------------------------------------------

# --- card section ----------------------------------------------------------------------

# --- export ----------------------------------------------------------------------------

# --- restriction and erasure -----------------------------------------------------------
