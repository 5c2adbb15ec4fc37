"""The strategies this hub's definitions accept, as declared once in fedpact.common.algorithms.

Served without authentication: the list is the same for everyone and holds nothing private,
and the dashboard's new-task form reads it. The hub imports only the declarations, never
the NumPy code that implements them.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from fedpact.common.algorithms import CATALOG

router = APIRouter(tags=["algorithms"])


class AlgorithmParamOut(BaseModel):
    name: str
    type: Literal["float", "int"]
    default: float | int | None
    help: str
    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool
    exclusive_maximum: bool


class AlgorithmOut(BaseModel):
    name: str
    title: str
    summary: str
    params: list[AlgorithmParamOut]
    privacy_modes: list[str]
    individual_updates: bool
    reference: str


@router.get("/algorithms", response_model=list[AlgorithmOut])
def list_algorithms() -> list[AlgorithmOut]:
    """Every built-in strategy: parameters with types, defaults and bounds, and the privacy modes it runs under."""
    return [AlgorithmOut.model_validate(a.to_dict()) for a in CATALOG.values()]
