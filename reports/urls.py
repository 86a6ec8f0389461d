from django.urls import path

from reports import api

urlpatterns = [
    path("download/<str:token>", api.ReportDownloadView.as_view(), name="report-download"),
    path("files/<str:file_id>/link", api.ReportLinkView.as_view(), name="report-link"),
]
