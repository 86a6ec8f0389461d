"""The webhooks API: endpoints (with secret rotation), deliveries (with redeliver), and the
secret that signs deliveries to jobs' own `callback_url`."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api.pagination import CheckedCursorPagination
from jobs.api.serializers import ErrorSerializer
from notifications import selectors, services
from notifications.api.serializers import (
    CallbackSecretSerializer,
    DeliverySerializer,
    EndpointSerializer,
    EndpointWriteSerializer,
)

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 404: ErrorSerializer}


class DeliveryPagination(CheckedCursorPagination):
    pass


class EndpointListView(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_list",
        responses={
            200: inline_serializer("EndpointList", {"results": EndpointSerializer(many=True)}),
            401: ErrorSerializer,
        },
    )
    def get(self, request: Request) -> Response:
        endpoints = selectors.endpoints_list(user=request.user)
        return Response({"results": EndpointSerializer(endpoints, many=True).data})

    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=EndpointWriteSerializer,
        responses={201: EndpointSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = EndpointWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(owner=request.user, **serializer.validated_data)
        return Response(EndpointSerializer(endpoint).data, status=201)


class EndpointDetailView(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_get", responses={200: EndpointSerializer, **ERRORS}
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=endpoint_id)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhook_endpoints_update",
        request=EndpointWriteSerializer,
        responses={200: EndpointSerializer, **ERRORS},
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=endpoint_id)
        serializer = EndpointWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(operation_id="webhook_endpoints_delete", responses={204: None, **ERRORS})
    def delete(self, request: Request, endpoint_id: str) -> Response:
        selectors.endpoint_get(user=request.user, endpoint_id=endpoint_id).delete()
        return Response(status=204)


class EndpointRotateView(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret",
        request=None,
        responses={200: EndpointSerializer, **ERRORS},
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        """A new secret; the old one keeps signing for the grace period."""
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=endpoint_id)
        return Response(EndpointSerializer(services.secret_rotate(holder=endpoint)).data)


class CallbackSecretView(APIView):
    @extend_schema(
        operation_id="webhook_callback_secret", responses={200: CallbackSecretSerializer}
    )
    def get(self, request: Request) -> Response:
        holder = services.callback_secret_get(owner=request.user)
        return Response(CallbackSecretSerializer(holder).data)


class CallbackSecretRotateView(APIView):
    @extend_schema(
        operation_id="webhook_callback_secret_rotate",
        request=None,
        responses={200: CallbackSecretSerializer},
    )
    def post(self, request: Request) -> Response:
        holder = services.secret_rotate(holder=services.callback_secret_get(owner=request.user))
        return Response(CallbackSecretSerializer(holder).data)


class DeliveryListView(APIView):
    @extend_schema(
        operation_id="webhook_deliveries_list",
        parameters=[
            OpenApiParameter("status", str),
            OpenApiParameter("endpoint", str),
            OpenApiParameter("job", str),
            *DeliveryPagination.parameters(),
        ],
        responses={
            200: inline_serializer(
                "DeliveryPage",
                {
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": DeliverySerializer(many=True),
                },
            ),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        deliveries = selectors.deliveries_list(
            user=request.user,
            status=request.query_params.get("status"),
            endpoint_id=request.query_params.get("endpoint"),
            job_id=request.query_params.get("job"),
        )
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)


class DeliveryDetailView(APIView):
    @extend_schema(
        operation_id="webhook_deliveries_get", responses={200: DeliverySerializer, **ERRORS}
    )
    def get(self, request: Request, delivery_id: str) -> Response:
        delivery = selectors.delivery_get(user=request.user, delivery_id=delivery_id)
        return Response(DeliverySerializer(delivery).data)


class DeliveryRedeliverView(APIView):
    @extend_schema(
        operation_id="webhook_deliveries_redeliver",
        request=None,
        responses={202: DeliverySerializer, 409: ErrorSerializer, **ERRORS},
    )
    def post(self, request: Request, delivery_id: str) -> Response:
        delivery = selectors.delivery_get(user=request.user, delivery_id=delivery_id)
        delivery = services.delivery_redeliver(delivery=delivery)
        return Response(DeliverySerializer(delivery).data, status=202)
