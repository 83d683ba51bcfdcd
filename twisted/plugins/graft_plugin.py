"""Makes ``twist graft`` find Graft. The service is built in graft.tap / graft.service."""

from twisted.application.service import ServiceMaker

graft = ServiceMaker(
    "Graft",
    "graft.tap",
    "A Raft consensus node serving a replicated state machine over HTTP.",
    "graft",
)
