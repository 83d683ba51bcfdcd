"""Client sessions: exactly-once commands (issue #18, docs/api.md "Sessions").

``table`` holds the replicated session table (pure: no clock, no I/O), ``envelope`` the
session operations a stamped entry carries, ``machine`` the layer between the driver and the
FSM that applies them and carries the table in snapshots and digests.
"""
