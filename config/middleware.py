"""Project-wide middleware."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncChainMiddleware:
    """The innermost middleware, sync only: it keeps every middleware above it on one thread.

    Under ASGI, Django runs a middleware in async mode whenever the handler below it is
    async, and Django's own middleware (`MiddlewareMixin`) then moves each `process_request`
    and `process_response` to a thread and back: about ten thread hops per request for the
    list in settings. With this one sync-only middleware at the bottom, the handler below
    the chain is adapted once, so the whole chain runs in sync mode on the request's thread:
    one hop in, one to resolve the view, one for a sync view. Async views (the long-poll,
    SSE streams) still run on the event loop, as before.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
