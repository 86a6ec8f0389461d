from django.urls import path

from jobs.api import schedules, streams, uploads, views

urlpatterns = [
    path("schedules", schedules.ScheduleListView.as_view(), name="schedule-list"),
    path("schedules/<str:name>", schedules.ScheduleDetailView.as_view(), name="schedule-detail"),
    path("jobs", views.JobListView.as_view(), name="job-list"),
    path("jobs/bulk", views.JobBulkView.as_view(), name="job-bulk"),
    path("jobs/requeue", views.JobRequeueView.as_view(), name="job-requeue"),
    path("jobs/<str:job_id>", views.job_detail, name="job-detail"),
    path("jobs/<str:job_id>/events", streams.job_events, name="job-events"),
    path("events", streams.all_events, name="events"),
    path("events/stats", streams.events_stats, name="events-stats"),
    path("jobs/<str:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<str:job_id>/retry", views.JobRetryView.as_view(), name="job-retry"),
    path("uploads", uploads.UploadCreateView.as_view(), name="upload-list"),
    path("uploads/<str:upload_id>", uploads.UploadDetailView.as_view(), name="upload-detail"),
    path("files/<str:file_id>", uploads.FileContentView.as_view(), name="file-content"),
]
