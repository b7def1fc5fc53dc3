"""Placeholder: filled in by the policy work (issue 4)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
