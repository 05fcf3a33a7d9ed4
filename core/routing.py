from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/jobs/<id:job_id>/", consumers.JobConsumer.as_asgi()),
    path("ws/audit/", consumers.AuditConsumer.as_asgi()),
    path("ws/warnings/", consumers.WarningConsumer.as_asgi()),
]
