"""Admin for support staff: find chats, people and messages.

Counters (`unread_count`, `last_message`) are kept by services.py, so they are read-only here.
"""

from django.contrib import admin

from chat.models import Block, Chat, Membership, Message


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    fields = ["user", "role", "joined_at", "unread_count", "last_read_message_id", "cleared_message_id", "is_hidden"]
    readonly_fields = ["unread_count", "last_read_message_id", "cleared_message_id"]


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "kind", "created_by", "created_at", "last_activity_at"]
    list_filter = ["kind", "created_at", "last_activity_at"]
    search_fields = ["name", "memberships__user__username", "memberships__user__email"]
    list_select_related = ["created_by"]
    raw_id_fields = ["created_by"]
    readonly_fields = ["direct_key", "last_message", "last_activity_at"]
    date_hierarchy = "created_at"
    inlines = [MembershipInline]

    def get_search_results(self, request, queryset, search_term):
        # Searching across memberships may match a chat once per member.
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset, True


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["id", "chat", "user", "role", "unread_count", "is_hidden", "joined_at"]
    list_filter = ["role", "is_hidden", "chat__kind"]
    search_fields = ["user__username", "user__email", "chat__name"]
    list_select_related = ["chat", "user"]
    raw_id_fields = ["chat", "user"]
    readonly_fields = ["unread_count", "last_read_message_id", "cleared_message_id"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "chat", "sender", "preview", "created_at"]
    list_filter = ["chat__kind", "created_at"]
    search_fields = ["body", "sender__username", "sender__email", "chat__name"]
    list_select_related = ["chat", "sender"]
    raw_id_fields = ["chat", "sender"]
    readonly_fields = ["chat", "sender", "created_at"]
    date_hierarchy = "created_at"

    @admin.display(description="Message")
    def preview(self, message):
        return message.body[:80]


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    """Who blocked whom: people manage their own blocks on a chat's info page."""

    list_display = ["blocker", "blocked", "created_at"]
    search_fields = ["blocker__username", "blocker__email", "blocked__username", "blocked__email"]
    list_select_related = ["blocker", "blocked"]
    raw_id_fields = ["blocker", "blocked"]
    date_hierarchy = "created_at"
