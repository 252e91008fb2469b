"""Intake: from the end of DATA to one `MessageDocument` with its trace line, fingerprint and
authentication verdicts; runs in every worker, between the dialogue and delivery."""
