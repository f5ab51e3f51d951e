from django.urls import path

from chat.realtime import consumers

websocket_urlpatterns = [
    path("ws/chat/inbox/", consumers.InboxConsumer.as_asgi()),
    path("ws/chat/<int:chat_id>/", consumers.RoomConsumer.as_asgi()),
]
