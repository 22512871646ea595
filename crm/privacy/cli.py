"""`flask --app crm export client ID --out FILE.zip` and
`flask --app crm erase client ID --yes`."""

from __future__ import annotations

import click

export_cli = click.Group("export", help="Export one client's data (access, portability).")
erase_cli = click.Group("erase", help="Erase one client and everything about them.")
