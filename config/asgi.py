"""ASGI entry point (uvicorn): Django for HTTP (SSE included), Channels for `/ws/jobs`; the
hot status read (`GET /api/v1/jobs/{id}` with a token) is answered in front of Django by
jobs/api/fastread.py."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from jobs.api.fastread import FastRead  # noqa: E402
from jobs.api.sockets import JobsConsumer, TokenAuthMiddleware, origin_validator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": FastRead(django_application),
        "websocket": origin_validator(
            TokenAuthMiddleware(
                AuthMiddlewareStack(URLRouter([path("ws/jobs", JobsConsumer.as_asgi())]))
            )
        ),
    }
)
