"""Dependency aliases shared by the routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Connection

from service.bootstrap import Services


def get_services(request: Request) -> Services:
    """The process's opened services."""
    services: Services = request.app.state.services
    return services


def get_conn(services: Annotated[Services, Depends(get_services)]) -> Iterator[Connection]:
    """A read-only connection for queries."""
    with services.engine.connect() as conn:
        yield conn


ServicesDep = Annotated[Services, Depends(get_services)]
ConnDep = Annotated[Connection, Depends(get_conn)]
