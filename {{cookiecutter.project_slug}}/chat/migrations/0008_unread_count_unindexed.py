from django.db import migrations


class Migration(migrations.Migration):
    """Every message changes `unread_count` on every member's row: an index holding it made
    each of those updates rewrite all the row's index entries (chat/models.py).

    On PostgreSQL, DROP INDEX is quick but locks the membership table while it runs, after
    waiting for the transactions that use it: migrate when no long transaction is open."""

    dependencies = [
        ("chat", "0007_message_changes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="membership",
            name="membership_user_unread",
        ),
    ]
