from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/migrations/<id:migration_id>/", consumers.MigrationConsumer.as_asgi()),
]
