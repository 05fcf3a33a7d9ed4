from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/evacuations/<id:evacuation_id>/", consumers.EvacuationConsumer.as_asgi()),
]
