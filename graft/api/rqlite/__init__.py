"""rqlite's HTTP API beside Graft's own (docs/rqlite.md): its /db/* routes and /readyz on every
node's API port, so rqlite's clients (pyrqlite, sqlalchemy-rqlite, ...) work unchanged."""
