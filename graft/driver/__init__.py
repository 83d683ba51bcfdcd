"""The driver: runs the pure Raft core (graft.raft) on the reactor, with storage, peers and
the FSM (docs/architecture.md, "The driver"). graft.driver.wiring.build_node assembles a
GraftNode (graft.driver.node) from its parts."""
