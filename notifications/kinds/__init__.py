"""Job kinds of the notifications app; each module registers its kind on import."""

from notifications.kinds import email, email_campaign, webhook  # noqa: F401
