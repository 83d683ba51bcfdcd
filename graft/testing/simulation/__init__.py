"""The deterministic simulation of the Raft core: seeded clusters under hostile schedules.

``python -m graft.testing.simulation --seeds N`` (``make simulate``) runs seeds 0..N-1;
``--seed S --trace`` replays one. Modules: cluster (the nodes, their disks, the driver model
and message delivery), network (messages in flight; drops, delays, duplicates, reordering and
cut links), clocks (tick rates, late ticks, stalls), checker (the Raft invariants and read
checks), schedule (what a schedule draws and does: parameters, crashes, clients, membership
changes, slow disks), streams (the named random streams), run (one seeded run,
``simulate_seed``). Used only by tests and ``make simulate``; nothing of the node imports it.
"""
