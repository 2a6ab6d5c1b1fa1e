"""User ids are replaced by a keyed hash at the door."""

from flywheel_assets.ingest.pseudonymise import user_key


def test_keyed_hash_depends_on_the_secret():
    assert user_key("alice", "s1") == user_key("alice", "s1")
    assert user_key("alice", "s1") != user_key("alice", "s2")
    assert "alice" not in user_key("alice", "s1")
