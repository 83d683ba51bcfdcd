"""Fault injection: real `twist graft` nodes in a private network namespace, real faults.

``python -m graft.testing.faults --runs N --duration S [--seed X] [--out DIR]``
(``make faults``) runs N seeded runs. Each run creates a network namespace, starts a 5-node
kv cluster inside it, drives concurrent clients through the HTTP API while nemeses partition,
kill, pause and slow the nodes, heals, and checks the recorded history
(graft.testing.linearizability and graft.testing.faults.checker). See docs/faults.md.

Modules: netns (the namespace and its iptables/tc faults), node_main (binds each node's
outbound connections to its own address), cluster (the node processes), workload (the
clients), nemesis (the fault schedule and the status poller), history (the records),
checker (verdicts), report (the HTML timeline), run (one run, inside the namespace).
"""
