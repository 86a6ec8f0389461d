"""Reads of the webhooks: a user sees only their own endpoints and deliveries."""

import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from jobs.errors import NotFound
from notifications.models import Delivery, Endpoint


def endpoints_list(*, user: AbstractBaseUser) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(owner=user).order_by("-created_at")


def endpoint_get(*, user: AbstractBaseUser, endpoint_id: int | str) -> Endpoint:
    try:
        return Endpoint.objects.get(owner=user, id=int(endpoint_id))
    except (ValueError, Endpoint.DoesNotExist):
        raise NotFound(f"No webhook endpoint {str(endpoint_id)[:40]!r} among yours.") from None


def deliveries_list(
    *,
    user: AbstractBaseUser,
    status: str | None = None,
    endpoint_id: str | None = None,
    job_id: str | None = None,
) -> QuerySet[Delivery]:
    deliveries = Delivery.objects.filter(owner=user)
    if status:
        deliveries = deliveries.filter(status__in=status.split(","))
    if endpoint_id:
        deliveries = (
            deliveries.filter(endpoint_id=int(endpoint_id))
            if endpoint_id.isdigit()
            else deliveries.none()
        )
    if job_id:
        try:
            deliveries = deliveries.filter(job_id=uuid.UUID(job_id))
        except ValueError:
            deliveries = deliveries.none()
    return deliveries.order_by("-created_at", "-id")


def delivery_get(*, user: AbstractBaseUser, delivery_id: str) -> Delivery:
    try:
        return Delivery.objects.get(owner=user, id=uuid.UUID(str(delivery_id)))
    except (ValueError, Delivery.DoesNotExist):
        raise NotFound(f"No webhook delivery {str(delivery_id)[:40]!r} among yours.") from None
