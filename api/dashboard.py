"""The web dashboard: static files (plain ES modules, no build step) served at ``/``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "install_dashboard"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/``; mount it after the API routes, which take precedence."""
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
