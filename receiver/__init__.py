"""SMTP ingress: admit or refuse a connection before the greeting, run the dialogue under
deadlines and limits, and answer 250 only once the message is durably stored."""
