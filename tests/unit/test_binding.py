"""The binding tag: deterministic per (iss, sub), distinct across users and issuers, and
keyed when a key is given."""

from piigate.vault.binding import binding_tag


def test_tag_is_stable_and_shaped_for_piiano_tags() -> None:
    tag = binding_tag("https://idp.example/", "auth0|alice")
    assert tag == binding_tag("https://idp.example/", "auth0|alice")
    assert tag.startswith("piigate-sub-")
    assert len(tag) == len("piigate-sub-") + 32


def test_users_issuers_and_keys_all_change_the_tag() -> None:
    tags = {
        binding_tag("https://idp.example/", "auth0|alice"),
        binding_tag("https://idp.example/", "auth0|bob"),
        binding_tag("https://other.example/", "auth0|alice"),
        # No ambiguity from where iss ends and sub begins.
        binding_tag("https://idp.example/auth0", "|alice"),
        binding_tag("https://idp.example/", "auth0|alice", b"secret"),
    }
    assert len(tags) == 5
