"""The database: tables, states, the engine, schema migrations and locks.

Contract: `tables` defines every row and `states` every state and kind name; `engine`
makes connections and transactions (SQLite or PostgreSQL); `schema` migrates (an explicit
step: `mailbot db upgrade`, or the daemon at start) and tells read-only commands when the
schema is behind; `locks` says who may do what when daemons share one database.
"""
