"""`python manage.py metrics_serve --port 9808`: this host's counters and histograms for a
host that runs workers but no web process (see jobs/metrics.py). Database and broker gauges
come from the web's /metrics, so a scrape of both never counts anything twice."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.core.management.base import BaseCommand

from jobs.metrics import CONTENT_TYPE, metrics_render_local


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "Only /metrics is served here.")
            return
        body = metrics_render_local()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class Command(BaseCommand):
    help = "Serve this host's worker metrics (counters and histograms) on /metrics."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--address", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9808)

    def handle(self, *args: Any, address: str, port: int, **options: Any) -> None:
        server = ThreadingHTTPServer((address, port), _Handler)
        self.stdout.write(f"serving this host's metrics on http://{address}:{port}/metrics")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
