from django.urls import path

from notifications.api import views

urlpatterns = [
    path("endpoints", views.EndpointListView.as_view(), name="webhook-endpoint-list"),
    path(
        "endpoints/<str:endpoint_id>",
        views.EndpointDetailView.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "endpoints/<str:endpoint_id>/rotate-secret",
        views.EndpointRotateView.as_view(),
        name="webhook-endpoint-rotate",
    ),
    path("callback-secret", views.CallbackSecretView.as_view(), name="webhook-callback-secret"),
    path(
        "callback-secret/rotate",
        views.CallbackSecretRotateView.as_view(),
        name="webhook-callback-secret-rotate",
    ),
    path("deliveries", views.DeliveryListView.as_view(), name="webhook-delivery-list"),
    path(
        "deliveries/<str:delivery_id>",
        views.DeliveryDetailView.as_view(),
        name="webhook-delivery-detail",
    ),
    path(
        "deliveries/<str:delivery_id>/redeliver",
        views.DeliveryRedeliverView.as_view(),
        name="webhook-delivery-redeliver",
    ),
]
