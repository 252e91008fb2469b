"""The door: where every connection is judged before the banner (blocklist, caps, rates,
PROXY header, pregreet, DNS lists) and handed over to a worker; runs in the host's gate."""
