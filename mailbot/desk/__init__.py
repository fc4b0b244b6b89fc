"""The desk: what each stored message does, and the life of a ticket.

Contract: `worker` claims stored messages in batches and owns retries, quarantine and
metrics; `triage` decides what one message does (`handle`), through the public rules of
`policy` (what an extraction asks for), `replyguard` (may we answer automatically),
`followup`, `bounces` (mailbot's own mail coming back) and `tickets`, the one owner of a
ticket's state. `extractor` runs the pure extraction in a worker process with limits;
`reprocess` re-runs it on stored mail through the same public functions.
"""
