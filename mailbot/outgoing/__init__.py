"""Everything that leaves: rendering, composing, the outbox, transports.

Contract: a mail is rendered from a template (`render`), composed into exact bytes and
queued as an outbox row in the caller's transaction (`mailer`, the one way to send), and
delivered later by `outbox` through a transport (`transports`). `sanitize` is the one gate
between inbound bytes and anything shown or sent; `plaintext` lays out text parts;
`sendhealth` tells whether mail can leave; `outbox_admin` is the operator's view.
"""
