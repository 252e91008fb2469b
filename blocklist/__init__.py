"""IP blocklist: entries, the local cache each receiver answers from, and its sync from MongoDB."""
