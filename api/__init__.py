"""HTTP API: mailbox reads, blocklist administration, health and metrics."""
