from django.db import models


class PendingSignup(models.Model):
    """A sign-up waiting for its address's owner to follow the link mailed to it.

    No account exists until then, so nobody can be found by, or start chats from, an
    address they do not own, and a stranger's pending sign-up never blocks the owner's.
    """

    username = models.CharField(max_length=150)
    email = models.EmailField()
    password = models.CharField(max_length=128)  # hashed, as on the user
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.username} <{self.email}>"
