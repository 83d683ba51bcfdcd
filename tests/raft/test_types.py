"""Tests for the core's plain data types."""

from twisted.trial import unittest

from graft.raft.types import Membership, decode_membership, encode_membership


class MembershipTests(unittest.TestCase):
    def test_round_trip(self) -> None:
        """A membership survives encoding and decoding, and its encoding is canonical."""
        m = Membership(voters=frozenset({"b", "a", "c"}), learners=frozenset({"d"}))
        self.assertEqual(decode_membership(encode_membership(m)), m)
        self.assertEqual(encode_membership(m), b'{"voters":["a","b","c"],"learners":["d"]}')

    def test_quorum(self) -> None:
        """A quorum is a strict majority of voters; learners do not count."""
        self.assertEqual(Membership(voters=frozenset("abc"), learners=frozenset("de")).quorum(), 2)
        self.assertEqual(Membership(voters=frozenset("abcd")).quorum(), 3)
