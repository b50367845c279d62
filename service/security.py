"""API-key checks: required for writes and admin actions, optional for reads.

The key comes from ``HIMNET_API_KEY`` or a mounted secret file (``HIMNET_API_KEY_FILE``) and is
compared in constant time. Clients send ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from service.problems import Problem
from service.state import Services, get_services

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="himnet"'}


def _presented(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return None


def _check(request: Request, services: Services) -> None:
    expected = services.api_key
    if expected is None:
        if services.settings.auth_disabled:
            return
        raise Problem(403, "writes-disabled",
                      "no API key is configured on this server, so writes and admin actions are "
                      "refused: set HIMNET_API_KEY or HIMNET_API_KEY_FILE (or HIMNET_AUTH_DISABLED"
                      "=true for local experiments)")
    given = _presented(request)
    if given is None:
        raise Problem(401, "unauthorized", "this endpoint needs an API key: send "
                      "'X-API-Key: <key>' or 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Problem(401, "unauthorized", "the API key is not valid", headers=_CHALLENGE)


async def require_key(request: Request, services: Services = Depends(get_services)) -> None:
    """Dependency for writes and admin actions."""
    _check(request, services)


async def read_access(request: Request, services: Services = Depends(get_services)) -> None:
    """Dependency for read endpoints: a key only when ``protect_reads`` is set."""
    if services.settings.protect_reads:
        _check(request, services)
