"""Chats, memberships and messages: fields, constraints and indexes only.

Business rules live in `services.py` (writes) and `selectors.py` (reads).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# Ids above this are not ids: they would overflow SQLite's and PostgreSQL's integers.
MAX_ID = 2**62


def whole_number(raw: str) -> int | None:
    """`raw` (a query parameter) as a non-negative integer no larger than MAX_ID, else None."""
    # isascii: str.isdigit() is also true for "²" and other digits int() rejects.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
        return None
    return int(raw)


class Chat(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct", "Direct"
        GROUP = "group", "Group"

    kind = models.CharField(max_length=6, choices=Kind.choices)
    name = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # "smaller_id:larger_id" for direct chats; the unique constraint makes a second
    # direct chat between the same two people impossible, even under a race. NULL (not
    # "") for groups, so that groups never collide on it.
    direct_key = models.CharField(max_length=64, null=True, blank=True, editable=False)  # noqa: DJ001
    # Denormalised so the inbox orders and previews without a query per chat.
    last_message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    last_activity_at = models.DateTimeField(default=timezone.now)
    # The chat's change cursor: bumped (under the chat's row lock) by every edit, delete for
    # everyone and reaction change, and stored on the message changed, so a room that
    # missed a change frame asks for "the messages changed since N".
    change_seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["direct_key"], name="chat_one_direct_chat_per_pair"),
            models.CheckConstraint(
                condition=Q(kind="direct", direct_key__isnull=False) | Q(kind="group", direct_key__isnull=True),
                name="chat_direct_key_only_for_direct",
            ),
        ]

    def __str__(self):
        return self.name or f"{self.get_kind_display()} chat {self.pk}"

    @property
    def is_group(self) -> bool:
        return self.kind == self.Kind.GROUP


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_memberships")
    role = models.CharField(max_length=6, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now)
    # Ids rather than foreign keys: plain integers, no join or cascade when messages go.
    last_read_message_id = models.BigIntegerField(default=0)
    # Messages up to this id are hidden for this member (set by "delete for me").
    cleared_message_id = models.BigIntegerField(default=0)
    # Messages after last_read from other people; kept exact by services.send_message and
    # services.mark_read so the inbox and badges never count rows.
    unread_count = models.PositiveIntegerField(default=0)
    is_hidden = models.BooleanField(default=False)
    # The newest message that @mentions this member; the inbox marks the chat while it is
    # after last_read_message_id, so reading the chat clears the mark with no extra write.
    last_mention_message_id = models.BigIntegerField(default=0)
    # Muted: its unread messages are counted on its own row but left out of the total
    # unread badge, so it never calls for attention.
    is_muted = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="membership_one_per_user_per_chat"),
        ]
        indexes = [
            # Inbox: a user's visible chats (and their unread totals, read from those rows).
            # No index holds `unread_count`: every message changes it on every member's row,
            # and PostgreSQL then rewrites each of the row's index entries too (no HOT update):
            # a room of 100 counted a message unread in 1.2 ms with one, 0.4 without.
            models.Index(fields=["user", "is_hidden"], name="membership_user_visible"),
        ]

    def __str__(self):
        return f"{self.user} in {self.chat}"

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN


class FormerMembership(models.Model):
    """Someone who left a group or was removed from it, so the chat's pages can tell them
    so instead of a bare 404. Gone again when they are added back or the chat is deleted."""

    class Reason(models.TextChoices):
        LEFT = "left", "Left"
        REMOVED = "removed", "Removed"

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=7, choices=Reason.choices)
    left_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="former_membership_one_per_user_per_chat"),
        ]

    def __str__(self):
        return f"{self.user} {self.get_reason_display().lower()} {self.chat}"


class Block(models.Model):
    """`blocker` blocked `blocked`: no direct messages between them, no new direct chat from
    `blocked`, and `blocked`'s messages in shared groups collapsed for `blocker`."""

    blocker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    blocked = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_once_per_pair"),
            models.CheckConstraint(condition=~Q(blocker=models.F("blocked")), name="block_not_yourself"),
        ]
        # "Who blocked this sender?" (sending in a direct chat) goes by `blocked`.
        indexes = [models.Index(fields=["blocked", "blocker"], name="block_blocked_blocker")]

    def __str__(self):
        return f"{self.blocker} blocked {self.blocked}"


class Message(models.Model):
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages", db_index=False)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # Chosen by the sending client for each message it sends: a retried send (after a
    # reconnect, or over HTTP after the socket failed) finds the message already stored.
    client_id = models.CharField(max_length=64, blank=True, default="", editable=False)
    # The message this one replies to, in the same chat. Its quote is rendered from the
    # original's current state (a deleted original says so), never copied. No constraint
    # and no cascade: deleting a message leaves its replies, whose quote then says it is gone.
    reply_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        editable=False,
    )
    # @mentions resolved against the chat's members when sent: [[start, end, user_id], ...],
    # offsets into `body` of each "@name". Rendered as highlights without a query.
    mentions = models.JSONField(default=list, blank=True, editable=False)
    # Edits, deletes for everyone and reactions (services.edit_message, delete_message,
    # toggle_reaction). A deleted message keeps its row (ids and unread counts stay in
    # order) but not its body. `change_seq` is the chat's change cursor at its last change.
    edited_at = models.DateTimeField(null=True, blank=True, editable=False)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    change_seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sender", "client_id"],
                condition=~models.Q(client_id=""),
                name="message_client_id_once_per_sender",
            ),
        ]
        indexes = [
            # History pages ("before id Y", "after id Y") and unread counts of chat X.
            models.Index(fields=["chat", "id"], name="message_chat_id"),
            # Catch-up of changes: the messages of chat X changed since cursor N.
            models.Index(fields=["chat", "change_seq"], name="message_chat_change_seq"),
        ]

    def __str__(self):
        return f"{self.sender}: {self.body[:40]}"


class Reaction(models.Model):
    """One person's emoji on one message; toggled by services.toggle_reaction."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user", "emoji"], name="reaction_once_per_user_and_emoji"),
        ]

    def __str__(self):
        return f"{self.user} {self.emoji} on {self.message_id}"


class Report(models.Model):
    """A member telling the site's staff about a message (services.report_message)."""

    class Reason(models.TextChoices):
        SPAM = "spam", "Spam"
        ABUSE = "abuse", "Harassment or abuse"
        INAPPROPRIATE = "inappropriate", "Inappropriate content"
        OTHER = "other", "Something else"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    details = models.TextField(blank=True, max_length=1000)
    # The text as it was when reported: an edit or a delete afterwards does not erase what
    # the staff were told about.
    reported_body = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "reporter"], name="report_once_per_reporter"),
        ]
        indexes = [models.Index(fields=["resolved_at", "created_at"], name="report_open_first")]

    def __str__(self):
        return f"Report {self.pk} on message {self.message_id}"


class RoomPresence(models.Model):
    """One open room socket. Kept in the database so every server process counts the
    same people online; rows of a crashed process expire after `chat.realtime.presence.STALE_AFTER`."""

    channel_name = models.CharField(max_length=255, unique=True)  # the socket's name, unique across processes
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    seen_at = models.DateTimeField(default=timezone.now)
    # False while the page is in a background tab: its person is online but not reading.
    visible = models.BooleanField(default=True)

    class Meta:
        indexes = [models.Index(fields=["chat", "seen_at"], name="presence_chat_seen")]

    def __str__(self):
        return f"{self.user} in {self.chat}"
