"""Why a message was not stored: the outcomes a receiver maps to SMTP replies (no driver)."""

from __future__ import annotations


class StoreError(Exception):
    """The message was not durably stored; the sender should retry (451)."""


class StoreBusy(StoreError):
    """Too many inserts already in flight; refused without queueing."""


class StoreTimeout(StoreError):
    """The store did not confirm durability within the deadline."""


class StoreRejected(StoreError):
    """This message can never be stored as it is (unencodable, too large): retrying is futile.

    Raised before the message joins a batch, so it fails only its own sender.
    """
