from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.errors import OffloadError
from notifications import services
from notifications.models import Delivery, EmailSend, Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "enabled", "event_types", "disabled_reason", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "owner__username")
    readonly_fields = ("secret", "previous_secret", "previous_valid_until")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "url",
        "status",
        "attempts",
        "last_status_code",
        "last_latency_ms",
        "created_at",
    )
    list_filter = ("status", "event_type")
    search_fields = ("=id", "url", "message_id")
    list_select_related = ("owner",)
    actions = ("action_redeliver",)
    readonly_fields = [field.name for field in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Redeliver the selected deliveries now")
    def action_redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        done = 0
        for delivery in queryset:
            try:
                services.delivery_redeliver(delivery=delivery)
                done += 1
            except OffloadError as exc:
                self.message_user(request, f"{delivery.id}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{done} deliveries queued again.")


@admin.register(EmailSend)
class EmailSendAdmin(admin.ModelAdmin):
    """The send ledger, read-only: what was sent to whom, with the server's reply."""

    list_display = ("recipient", "status", "smtp_code", "job", "campaign", "updated_at")
    list_filter = ("status",)
    search_fields = ("recipient", "job__id")
    readonly_fields = [f.name for f in EmailSend._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
