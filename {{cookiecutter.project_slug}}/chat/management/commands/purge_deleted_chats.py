"""Hard-delete chats that every member has deleted for themselves.

python manage.py purge_deleted_chats --dry-run --older-than 30
"""

from django.core.management.base import BaseCommand, CommandError

from chat import services


class Command(BaseCommand):
    help = "Hard-delete chats that every member has deleted for themselves, with their messages."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            default=0,
            metavar="DAYS",
            help="Only chats without activity in the last DAYS days (default 0: all of them).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Show what would be deleted; delete nothing.")

    def handle(self, *args, older_than, dry_run, **options):
        if older_than < 0:
            raise CommandError("--older-than takes a number of days, 0 or more.")
        chat_ids = services.purge_deleted_chats(older_than_days=older_than, dry_run=dry_run)
        if not chat_ids:
            self.stdout.write("Nothing to purge.")
            return
        verb = "Would delete" if dry_run else "Deleted"
        ids = ", ".join(str(chat_id) for chat_id in chat_ids)
        self.stdout.write(f"{verb} {len(chat_ids)} chat{'s' if len(chat_ids) != 1 else ''}: {ids}")
