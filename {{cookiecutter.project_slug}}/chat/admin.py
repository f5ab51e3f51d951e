"""Admin for support staff: find chats, people and messages.

Counters (`unread_count`, `last_message`) are kept by services.py, so they are read-only here.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.utils.html import format_html, format_html_join

from chat import selectors, services
from chat.models import Block, Chat, Membership, Message, Report


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

    # Deleted as a group's admin deletes one: the chat locked first, its open rooms closed.
    def delete_model(self, request, obj):
        services.delete_chats(chat_ids=[obj.pk])

    def delete_queryset(self, request, queryset):
        services.delete_chats(chat_ids=queryset.values("pk"))


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
    readonly_fields = ["chat", "sender", "created_at", "edited_at", "deleted_at"]
    date_hierarchy = "created_at"
    actions = ["delete_for_everyone"]

    # Deleted outright with their chats locked first, as every change of a message locks it.
    def delete_model(self, request, obj):
        services.delete_messages(message_ids=[obj.pk])

    def delete_queryset(self, request, queryset):
        services.delete_messages(message_ids=queryset.values("pk"))

    @admin.display(description="Message")
    def preview(self, message):
        return "(deleted)" if message.deleted_at else message.body[:80]

    @admin.action(description="Delete the selected messages for everyone (keeps a placeholder)")
    def delete_for_everyone(self, request, queryset):
        delete_for_everyone(self, request, list(queryset))


def delete_for_everyone(model_admin, request, messages_to_delete) -> bool:
    """Through the one delete service: the rooms see the placeholder live, counts are fixed."""
    try:
        for message in messages_to_delete:
            services.delete_message(message=message, actor=request.user, as_staff=True)
    except PermissionDenied as exc:
        model_admin.message_user(request, str(exc), level=messages.ERROR)
        return False
    model_admin.message_user(request, f"{len(messages_to_delete)} message(s) deleted for everyone.")
    return True


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """Reports of messages, open ones first, each shown with the messages around it."""

    list_display = ["id", "reported_preview", "reason", "reporter", "chat", "created_at", "resolved_at"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "reason", "created_at"]
    search_fields = ["reported_body", "details", "reporter__username", "message__sender__username"]
    list_select_related = ["reporter", "message", "message__chat"]
    fields = ["message_in_context", "reported_body", "reason", "details", "reporter", "created_at", "resolved_at"]
    readonly_fields = fields
    ordering = ["-resolved_at", "-created_at"]
    actions = ["delete_messages_for_everyone", "mark_resolved"]

    def has_add_permission(self, request):
        return False  # reports come from members, in the chat

    @admin.display(description="Reported text")
    def reported_preview(self, report):
        return report.reported_body[:80]

    @admin.display(description="Chat")
    def chat(self, report):
        return report.message.chat

    @admin.display(description="The message in its chat")
    def message_in_context(self, report):
        rows = [
            (
                message.created_at.strftime("%Y-%m-%d %H:%M"),
                selectors.display_name(message.sender),
                "(deleted)" if message.deleted_at else message.body,
                "◀ reported" if message.pk == report.message_id else "",
            )
            for message in selectors.report_context(message=report.message)
        ]
        body = format_html_join("", '<tr><td>{}</td><th scope="row">{}</th><td>{}</td><td>{}</td></tr>', rows)
        return format_html('<table class="report-context"><tbody>{}</tbody></table>', body)

    @admin.action(description="Delete the reported messages for everyone and resolve")
    def delete_messages_for_everyone(self, request, queryset):
        reports = list(queryset.select_related("message"))
        reported = list({report.message_id: report.message for report in reports}.values())
        if delete_for_everyone(self, request, reported):
            services.resolve_reports(reports=reports)

    @admin.action(description="Mark resolved (keep the messages)")
    def mark_resolved(self, request, queryset):
        resolved = services.resolve_reports(reports=list(queryset))
        self.message_user(request, f"{resolved} report(s) marked resolved.")


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    """Who blocked whom: people manage their own blocks on a chat's info page."""

    list_display = ["blocker", "blocked", "created_at"]
    search_fields = ["blocker__username", "blocker__email", "blocked__username", "blocked__email"]
    list_select_related = ["blocker", "blocked"]
    raw_id_fields = ["blocker", "blocked"]
    date_hierarchy = "created_at"
