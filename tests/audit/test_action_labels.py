"""Every action the code records has a human label on the audit log page."""

from __future__ import annotations

import ast
from pathlib import Path

from crm.audit.views import ACTIONS

CRM = Path(__file__).resolve().parents[2] / "crm"
# Functions that append an audit entry with the action as first argument (or action=).
RECORDERS = {"audit", "record", "_audit"}


def recorded_actions() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in CRM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            # writer.record(...) and the like are other objects' methods, not the audit log.
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else "audit"
            if name not in RECORDERS or "audit" not in owner:
                continue
            first = node.args[0] if node.args else None
            if first is None:
                first = next((k.value for k in node.keywords if k.arg == "action"), None)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, str(path.relative_to(CRM.parent)))
    return found


def test_every_recorded_action_has_a_label():
    actions = recorded_actions()
    assert len(actions) > 40  # the scan finds the calls at all
    missing = {a: where for a, where in actions.items() if a not in ACTIONS}
    assert missing == {}
