"""Delivery: where an accepted message goes (the store, this host's spool, or `451`), the
spool's replay, the store's health and the mailbox cap; runs in every worker."""
