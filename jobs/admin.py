from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from jobs import services
from jobs.errors import OffloadError
from jobs.models import Job, StoredFile

# The admin index links the operator's dashboard (jobs/admin_dashboard.py).
admin.site.index_template = "jobs/admin/index.html"


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "progress_bar",
        "owner",
        "queue",
        "priority",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "kind", "queue", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=id", "kind", "idempotency_key")
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    actions = ("action_retry", "action_cancel")
    readonly_fields = [field.name for field in Job._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API or a service, never typed in

    def get_search_results(self, request, queryset, search_term):  # noqa: ANN001, ANN201
        # Searching by id must not crash on a term that is not a UUID.
        import uuid

        try:
            uuid.UUID(search_term)
        except ValueError:
            return queryset.filter(kind__icontains=search_term) | queryset.filter(
                idempotency_key=search_term
            ), False
        return queryset.filter(id=search_term), False

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        percent = job.progress_percent or (100 if job.status == "succeeded" else 0)
        return format_html(
            '<div style="width:120px;background:#eee;border-radius:3px" title="{}">'
            '<div style="width:{}%;background:#417690;height:10px;border-radius:3px"></div></div>',
            job.progress_message or f"{percent:.0f}%",
            int(percent),
        )

    def _apply(self, request: HttpRequest, queryset: QuerySet[Job], action, verb: str) -> None:  # noqa: ANN001
        done, refused = 0, []
        for job in queryset:
            try:
                action(job=job)
                done += 1
            except OffloadError as exc:
                refused.append(exc.message)
        if done:
            self.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)
        for message in refused[:10]:
            self.message_user(request, message, messages.WARNING)

    @admin.action(description="Retry selected jobs (failed, dead or cancelled)")
    def action_retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        try:
            requeued = services.jobs_requeue(jobs=list(queryset))
        except OffloadError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        skipped = queryset.count() - len(requeued)
        self.message_user(request, f"Requeued {len(requeued)} job(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} job(s) were not failed, dead or cancelled and were left alone.",
                messages.WARNING,
            )

    @admin.action(description="Cancel selected jobs")
    def action_cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._apply(request, queryset, services.job_cancel, "Cancelled")


from jobs.schedules import admin as schedules_admin  # noqa: E402, F401  (schedule pages)


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = ("storage_name", "purpose", "owner", "content_type", "size", "created_at")
    list_filter = ("purpose", "content_type")
    search_fields = ("=id", "storage_name", "original_name", "sha256")
    list_select_related = ("owner",)
    readonly_fields = [field.name for field in StoredFile._meta.fields]
    ordering = ("-created_at",)
