"""Tests for the core's plain data types."""

import dataclasses

from twisted.trial import unittest

from graft.raft.types import (
    Entry,
    EntryKind,
    MemberAddress,
    Membership,
    decode_membership,
    encode_membership,
    make_entry,
    membership_from_dict,
)


class EntryTests(unittest.TestCase):
    def test_make_entry_is_the_constructor(self) -> None:
        """make_entry builds the entry Entry(...) builds, as frozen, for every field Entry has
        (a field added to Entry without make_entry fails here)."""
        names = [f.name for f in dataclasses.fields(Entry)]
        self.assertEqual(names, ["index", "term", "kind", "data"])
        for kind in EntryKind:
            made = make_entry(7, 3, kind, b"x")
            self.assertIs(type(made), Entry)
            self.assertEqual(made, Entry(index=7, term=3, kind=kind, data=b"x"))
            self.assertEqual(hash(made), hash(Entry(index=7, term=3, kind=kind, data=b"x")))
            self.assertRaises(dataclasses.FrozenInstanceError, setattr, made, "term", 4)


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


class MembershipAddressTests(unittest.TestCase):
    def test_addresses_round_trip_and_are_optional(self) -> None:
        """Addresses travel with the membership; an encoding without them (older entries)
        decodes to a membership with none."""
        m = Membership(
            voters=frozenset({"a"}),
            addresses=(("a", MemberAddress(host="10.0.0.1", p2p_port=1, api_port=2)),),
        )
        self.assertEqual(decode_membership(encode_membership(m)), m)
        self.assertEqual(m.address_of("a"), MemberAddress(host="10.0.0.1", p2p_port=1, api_port=2))
        self.assertIsNone(m.address_of("b"))
        self.assertEqual(
            decode_membership(b'{"voters":["a"],"learners":[]}'),
            Membership(voters=frozenset({"a"})),
        )

    def test_malformed_membership_is_refused(self) -> None:
        """A malformed membership raises ValueError naming the problem, never a partial object."""
        bad: list[object] = [
            [],
            {"voters": "a", "learners": []},
            {
                "voters": ["a"],
                "learners": [],
                "addresses": {"a": {"host": "h", "p2p": 0, "api": 1}},
            },
        ]
        for raw in bad:
            with self.assertRaises(ValueError):
                membership_from_dict(raw)


class NonVoterEncodingTests(unittest.TestCase):
    def test_non_voters_round_trip(self) -> None:
        """Non-voters travel with the membership; a membership without any encodes as before
        they existed (same bytes), and one that names a non-voter outside the learners is
        refused."""
        m = Membership(
            voters=frozenset({"a"}), learners=frozenset({"b", "c"}), non_voters=frozenset({"c"})
        )
        self.assertEqual(decode_membership(encode_membership(m)), m)
        self.assertIn(b'"non_voters":["c"]', encode_membership(m))
        plain = Membership(voters=frozenset({"a"}), learners=frozenset({"b"}))
        self.assertEqual(encode_membership(plain), b'{"voters":["a"],"learners":["b"]}')
        for raw in (
            {"voters": ["a"], "learners": [], "non_voters": ["b"]},
            {"voters": ["a"], "learners": ["b"], "non_voters": "b"},
        ):
            with self.assertRaises(ValueError):
                membership_from_dict(raw)
