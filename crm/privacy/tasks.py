"""Privacy actors and periodic jobs: deadline tasks for open requests, building an
export, removing expired export files."""

from __future__ import annotations
