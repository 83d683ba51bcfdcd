"""``graft start --join``: ask a running cluster to add this node before starting it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from graft.cli.connect import ClientSettings, checked_base_url, cluster_ca, make_client
from graft.cli.errors import GraftCLIError
from graft.cli.render import membership_line
from graft.client import GraftClient
from graft.client_errors import ClientError

if TYPE_CHECKING:
    from graft.config import ClusterConfig

# How long `graft start --join` waits for the cluster to refuse the new member before starting
# the node anyway: the leader answers only after the node has caught up, which it cannot do
# before it runs, so a pending answer after this long means "accepted, now catch up".
JOIN_REFUSAL_WINDOW_S = 3.0
# The leader's answer for a node it added as a learner but cannot reach (yet): not a refusal.
MEMBER_UNREACHABLE = "member_unreachable"


class JoinRequest:
    """The POST /cluster/members of `graft start --join`, answered in a thread: the leader
    answers only once the new node has caught up, which needs the node running."""

    def __init__(
        self, client: GraftClient, node_id: str, peer: Any, url: str, *, non_voter: bool = False
    ) -> None:
        self._client = client
        self._non_voter = non_voter
        self._node_id = node_id
        self._peer = peer
        self._url = url
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._outcome: dict[str, Any] | ClientError | None = None
        self._report_later = False

    def send(self) -> None:
        threading.Thread(target=self._ask, name="join", daemon=True).start()

    def _ask(self) -> None:
        try:
            outcome: dict[str, Any] | ClientError = self._client.add_member(
                self._node_id,
                self._peer.host,
                self._peer.p2p_port,
                self._peer.api_port,
                non_voter=self._non_voter,
            )
        except ClientError as error:
            outcome = error
        with self._lock:
            self._outcome = outcome
            self._answered.set()
            report = self._report_later
        if report:
            _report_join(self._node_id, self._url, outcome)

    def early_outcome(self, seconds: float) -> dict[str, Any] | ClientError | None:
        """The answer if it comes within ``seconds``; else None, and it is printed when it
        comes (until forget())."""
        self._answered.wait(seconds)
        with self._lock:
            if self._outcome is None:
                self._report_later = True
            return self._outcome

    def forget(self) -> None:
        with self._lock:
            self._report_later = False


def join_cluster(
    cfg: ClusterConfig,
    node_id: str,
    url: str,
    *,
    token: str | None,
    cacert: Path | None,
    timeout: float,
    non_voter: bool = False,
) -> JoinRequest:
    """Ask the cluster at ``url`` to add ``node_id`` (as a non-voter with ``non_voter``); raise
    if it refuses within the window, else return the request (its answer is printed when it
    comes)."""
    url = checked_base_url(url, "--join")
    peer = cfg.peer(node_id)
    settings = ClientSettings(
        urls=(url,), timeout=timeout, token=token, cacert=cacert or cluster_ca(cfg, node_id)
    )
    client = make_client(settings, option="--join", retry_unreachable=False)
    kind = "non-voter" if non_voter else "learner"
    click.echo(
        f"asking {url} to add {node_id} ({peer.host}, p2p port {peer.p2p_port}, api port "
        f"{peer.api_port}) as a {kind}...",
        err=True,
    )
    request = JoinRequest(client, node_id, peer, url, non_voter=non_voter)
    request.send()
    outcome = request.early_outcome(JOIN_REFUSAL_WINDOW_S)
    if isinstance(outcome, ClientError) and outcome.code != MEMBER_UNREACHABLE:
        raise GraftCLIError(
            f"joining through {url} failed, so {node_id} was not started: {outcome.message}"
        )
    if outcome is not None:
        _report_join(node_id, url, outcome)
        return request
    click.echo(
        f"no refusal from {url}: starting {node_id} to catch up as a learner; it is promoted "
        "to voter once it has (this is printed; `graft members list` shows it too)",
        err=True,
    )
    return request


def _report_join(node_id: str, url: str, result: dict[str, Any] | ClientError) -> None:
    if isinstance(result, ClientError) and result.code == MEMBER_UNREACHABLE:
        # Added, not refused: the message says where the leader fails to reach the node and
        # that it is promoted once it has caught up.
        click.echo(f"graft: warning: {result.message}", err=True)
    elif isinstance(result, ClientError):
        click.echo(
            f"graft: warning: joining through {url} failed: {result.message} ({node_id} may "
            "still be a learner: check `graft members list`)",
            err=True,
        )
    else:
        click.echo(f"{node_id} joined: {membership_line(result)}", err=True)
