"""Under ASGI the middleware chain runs in sync mode on the request's thread
(config.middleware.SyncChainMiddleware), not in async mode, where Django's own middleware
moves each of its hooks to a thread and back."""

import asyncio

import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.utils.deprecation import MiddlewareMixin

pytestmark = pytest.mark.django_db


def test_django_middleware_never_runs_in_async_mode_under_asgi(monkeypatch):
    async_calls: list[str] = []
    original = MiddlewareMixin.__acall__

    async def recording(self, request):
        async_calls.append(type(self).__name__)
        return await original(self, request)

    monkeypatch.setattr(MiddlewareMixin, "__acall__", recording)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=ASGIHandler())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/no-such-page")

    response = asyncio.run(ask())
    assert response.status_code == 404
    assert "X-Request-ID" in response.headers  # the whole chain ran
    assert response.headers["X-Frame-Options"] == "DENY"
    assert async_calls == []
