"""The schedules in the admin: django-celery-beat's periodic task pages, with Offload's
checks (a known kind, params valid for it, a supported schedule, a clocked time ahead),
its overlap policy inline, and the claimed slots listed read-only."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from django_celery_beat.admin import ClockedScheduleAdmin, PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import ClockedSchedule, PeriodicTask

from jobs.errors import OffloadError
from jobs.models import ScheduleConfig, ScheduleSlot
from jobs.schedules import services


def _form_error(exc: OffloadError) -> ValidationError:
    fields = {
        name: [str(item) for item in (errors if isinstance(errors, list) else [errors])]
        for name, errors in exc.fields.items()
    }
    message = exc.message
    if fields:
        message += " " + "; ".join(f"{name}: {', '.join(errs)}" for name, errs in fields.items())
    return ValidationError(message)


class OffloadPeriodicTaskForm(PeriodicTaskForm):
    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        clocked = data.get("clocked")
        given = sum(bool(data.get(name)) for name in ("interval", "crontab", "clocked"))
        try:
            services.schedule_validate(
                task=data.get("task") or "",
                kwargs=data.get("kwargs") or "{}",
                args=data.get("args") or "[]",
                clocked_time=clocked.clocked_time if clocked else None,
                solar=bool(data.get("solar")),
                schedules_set=given + bool(data.get("solar")),
            )
        except OffloadError as exc:
            raise _form_error(exc) from None
        if clocked:
            data["one_off"] = True
        return data


class ScheduleConfigInline(admin.StackedInline):
    model = ScheduleConfig
    can_delete = False
    fields = ("overlap",)
    extra = 1
    max_num = 1


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class OffloadPeriodicTaskAdmin(PeriodicTaskAdmin):
    form = OffloadPeriodicTaskForm
    inlines = [ScheduleConfigInline]


class ClockedForm(forms.ModelForm):
    class Meta:
        model = ClockedSchedule
        fields = ("clocked_time",)

    def clean_clocked_time(self):  # noqa: ANN201
        value = self.cleaned_data["clocked_time"]
        if value is not None and value <= timezone.now():
            raise ValidationError(
                f"The clocked time {value.isoformat()} is in the past; pick a time ahead."
            )
        return value


admin.site.unregister(ClockedSchedule)


@admin.register(ClockedSchedule)
class OffloadClockedScheduleAdmin(ClockedScheduleAdmin):
    form = ClockedForm


@admin.register(ScheduleSlot)
class ScheduleSlotAdmin(admin.ModelAdmin):
    list_display = ("schedule", "due_at", "outcome", "job_id", "claimed_by", "detail")
    list_filter = ("outcome", "schedule")
    search_fields = ("schedule",)
    ordering = ("-due_at",)
    readonly_fields = [field.name for field in ScheduleSlot._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
