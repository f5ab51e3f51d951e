from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.chat_list, name="list"),
    path("list-partial/", views.chat_list_partial, name="list_partial"),
    path("new/", views.new_chat, name="new"),
    path("new-group/", views.new_group, name="new_group"),
    path("check-user/", views.check_user, name="check_user"),
    path("widget/", views.widget, name="widget"),
    path("widget/<int:pk>/", views.widget_room, name="widget_room"),
    path("<int:pk>/", views.room, name="room"),
    path("<int:pk>/info/", views.info, name="info"),
    path("<int:pk>/leave/", views.leave, name="leave"),
    path("<int:pk>/delete/", views.delete, name="delete"),
    path("<int:pk>/delete-group/", views.delete_group, name="delete_group"),
    path("<int:pk>/edit/", views.edit, name="edit"),
    path("<int:pk>/messages/", views.messages_fragment, name="messages"),
    path("<int:pk>/send/", views.send, name="send"),
    path("<int:pk>/mention-candidates/", views.mention_candidates, name="mention_candidates"),
    # people: mute a chat, block a person
    path("<int:pk>/mute/", views.mute, name="mute"),
    path("<int:pk>/block/", views.block, name="block"),
    path("<int:pk>/unblock/", views.unblock, name="unblock"),
    path("<int:pk>/messages/<int:message_id>/", views.message_bubble, name="message"),
    path("<int:pk>/messages/<int:message_id>/edit/", views.edit_message, name="edit_message"),
    path("<int:pk>/messages/<int:message_id>/delete/", views.delete_message, name="delete_message"),
    path("<int:pk>/messages/<int:message_id>/react/", views.react, name="react"),
    path("<int:pk>/messages/<int:message_id>/report/", views.report_message, name="report_message"),
]
