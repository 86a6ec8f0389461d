from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from jobs import health
from jobs.admin_dashboard import dashboard_view
from notifications.unsubscribe import unsubscribe_view

urlpatterns = [
    # Staff only: admin_view sends anyone else to the admin login.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="offload-dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("jobs.api.urls")),
    path("api/v1/webhooks/", include("notifications.api.urls")),
    path("api/v1/reports/", include("reports.urls")),
    path("app/", include("jobs.web.urls")),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("unsubscribe/<str:token>", unsubscribe_view, name="unsubscribe"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]

handler404 = "jobs.api.errors.json_not_found"
handler500 = "jobs.api.errors.json_server_error"
