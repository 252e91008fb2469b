"""Replies whose text depends on the context (our name, the size limit, STARTTLS), rendered
once per worker rather than once per session."""

from __future__ import annotations

from receiver.replies import Reply
from receiver.smtp.context import SessionContext


class Wire:
    """Replies that depend on the context, rendered once per worker."""

    def __init__(self, ctx: SessionContext) -> None:
        size = ctx.policy.normal.max_message_size
        extensions = [f"SIZE {size}", "8BITMIME", "SMTPUTF8", "PIPELINING"]
        self.ehlo = Reply(250, "", "\n".join([ctx.hostname, *extensions, "ENHANCEDSTATUSCODES"]))
        offer = [ctx.hostname, *extensions, "STARTTLS", "ENHANCEDSTATUSCODES"]
        self.ehlo_starttls = Reply(250, "", "\n".join(offer))
        self.helo = Reply(250, "", ctx.hostname)
        self.banner = f"220 {ctx.hostname} ESMTP Floodgate\r\n".encode("ascii")
