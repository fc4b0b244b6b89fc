"""What support staff see and do: the SLA sweep, the digest, alerts, ticket views, staff actions.

Contract: these read the store and the desk's tickets and send through the outgoing
mailer; staff actions change tickets only through `mailbot.desk.tickets`.
"""
