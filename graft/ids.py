"""Node ids: the one rule for what a node may be called.

An id is a lowercase DNS label, because it ends up in certificate subjectAltNames and in file
names. The config, the admin API and the CLI all check ids with :func:`is_node_id`.
"""

from __future__ import annotations

import re
from typing import TypeGuard

_NODE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
NODE_ID_RULE = (
    "lowercase letters, digits and hyphens, 1-63 characters, not starting or ending with a hyphen"
)


def is_node_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that is a valid node id."""
    return isinstance(value, str) and _NODE_ID.match(value) is not None
