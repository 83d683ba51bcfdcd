"""The driver's settings: one frozen object, built by the composition root (graft.service)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from graft.driver.snapshot_policy import WAL_BOUND_BYTES
from graft.raft.types import MemberAddress, Membership


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverSettings:
    tick_seconds: float  # one core tick (the heartbeat interval)
    command_timeout: float  # how long a command may take to be applied
    query_timeout: float  # a read's default time limit
    max_query_timeout: float = 60.0  # the most a client's ?timeout= may ask for
    api_urls: Mapping[str, str] = field(default_factory=dict)  # the members' API base URLs
    api_scheme: str = "http"
    route_wait: float = 2.0  # how long a follower waits to know and reach a leader
    election_seconds: float | None = None  # None: ten ticks
    static_addresses: Mapping[str, MemberAddress] = field(default_factory=dict)  # config file
    bootstrap: Membership | None = None  # the membership a fresh data dir starts with
    # Snapshot rule (graft.driver.snapshot_policy): at least snapshot_entries entries since
    # the last one (0: never), and log bytes since >= snapshot_log_ratio x its size or
    # >= snapshot_max_log_bytes (0: no cap).
    snapshot_entries: int = 0
    snapshot_log_ratio: float = 0.0
    snapshot_max_log_bytes: int = 0
    snapshot_trailing: int = 0  # entries kept in the log below a snapshot
    # The growth of the FSM's WAL that makes a snapshot due (graft.driver.snapshot_policy);
    # not a config key: tests lower it.
    snapshot_wal_bytes: int = WAL_BOUND_BYTES
    fsm_name: str = ""
    catch_up_timeout: float = 120.0  # how long a new member may take to catch up
    # How long a new member may stay out of the leader's reach before add_member says so:
    # long enough for `graft start --join`, which starts the node 3 s after asking.
    member_unreachable_after: float = 10.0
    readies_in_flight: int = 2
    check_timeout: float = 60.0  # a replica check's digest
    query_threads: int = 2
    tick_waker: bool = False  # wake the reactor for ticks from a thread (graft.driver.tick_waker)

    @property
    def election(self) -> float:
        """The election timeout in seconds."""
        return self.election_seconds or 10 * self.tick_seconds

    @property
    def query_time_limit(self) -> float:
        """The longest time limit a read may have (never below the default)."""
        return max(self.max_query_timeout, self.query_timeout)
