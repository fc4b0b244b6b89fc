"""Where mail comes from, and its first stage: fetching.

Contract: a source (IMAP in `imap`, a local Maildir in `maildir`) serves the interface in
`base`; `fetch` stores each new message's raw bytes, one batch per transaction (`storing`
keys and inserts them), and never interprets them beyond the outer header block
(`inbound`). `idle` wakes the daemon when mail arrives; `folders` reads the sent folders
besides the inbox; `oauth` obtains tokens. Nothing here decides what a message means:
that is the desk's.
"""
