"""The driver: runs the pure Raft core (graft.raft) on the reactor, with storage, peers and
the FSM (docs/architecture.md, "The driver")."""
