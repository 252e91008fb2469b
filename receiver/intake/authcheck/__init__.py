"""Authentication verdicts for each accepted message: SPF, DKIM, DMARC and ARC (RFC 8601
words), computed beside the SMTP dialogue on the receiver's own resolver and stored with
the message."""

from receiver.intake.authcheck.check import AuthChecker, AuthConfig, Pending
from receiver.intake.authcheck.results import strip_forged

__all__ = ["AuthChecker", "AuthConfig", "Pending", "strip_forged"]
