"""POP-before-SMTP relay authorization for Postfix, on systemd, Redis and journald."""

__version__ = "0.3.0"
