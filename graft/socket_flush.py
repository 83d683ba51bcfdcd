"""Send what a Twisted TCP transport has buffered now, instead of on the reactor's next poll.

Twisted's ``FileDescriptor.write`` only appends to a buffer and registers the descriptor for
write; the ``send()`` happens once the reactor's next poll reports the socket writable. On a
commit's path (a leader's AppendEntries, a follower's acknowledgement, the client's answer)
that is one more reactor iteration at every hop, in which other work and the storage thread
get in first.
"""

from __future__ import annotations

from typing import Any


def flush_now(transport: Any) -> None:
    """Call the transport's ``doWrite``, as the reactor would once the socket is writable.

    ``doWrite`` (IWriteDescriptor) sends what the socket takes, keeps the rest buffered and
    registered for write, and unregisters once all is sent. If it reports the connection lost,
    nothing is done here: the descriptor is still registered for write, so the reactor's own
    ``doWrite`` meets the same error and closes the connection the usual way. A connection
    that is closing is left to the reactor, and so is a transport without ``doWrite`` (TLS
    layered on TCP, in-memory test transports).
    """
    do_write = getattr(transport, "doWrite", None)
    if do_write is not None and transport.connected and not transport.disconnecting:
        do_write()
