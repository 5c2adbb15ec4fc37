"""Liveness: answered without a database query so it also tells a starting client the port is up."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter

from fedpact.hub.schemas import Health

router = APIRouter(tags=["health"])


def hub_version() -> str:
    try:
        return version("fedpact")
    except PackageNotFoundError:
        return "0.1.0"


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok", version=hub_version())
