"""Webhooks: every new message POSTed, signed (Standard Webhooks), to the URLs registered for
its address, its domain or every message, by a dispatcher process of its own, never by the
receiver on the SMTP path.

`signing` (the signature), `limits` (bounds and the retry schedule, declared once),
`destination` (which URLs may be registered, and the one resolution an attempt connects
to), `payload` (what is sent), `sender` (one attempt), `dispatcher` (following the store,
durable deliveries, retries, disabling) and `metrics`. The deliveries themselves are
durable in the store (`mailstore.webhooks`).
"""
