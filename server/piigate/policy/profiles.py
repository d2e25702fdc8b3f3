"""Stage 2: the caller's one service profile, pure. No profile, no data."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from piigate.config import Profile
from piigate.errors import CallerPeerMissing, CallerPeerNotAllowed, CallerWithoutProfile
from piigate.identity.caller import Caller
from piigate.identity.peer import matches


class ProfileIndex:
    """The one profile of each caller; built once from config.

    A profile names its callers by client id, by mTLS identity, or both; with both, both
    must match, so a stolen bearer token is useless without the workload's certificate.
    A caller without a bearer token can use only a profile that names no client ids.
    """

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._index(tuple(profiles))

    def _index(self, profiles: tuple[Profile, ...]) -> None:
        self._profiles = profiles
        self._by_client = {client: p for p in profiles for client in p.callers}
        self._peer_only = tuple(p for p in profiles if not p.callers)

    def replace_vault_key(self, name: str, key: str) -> bool:
        """Give profile `name` a new vault API key (its key file was rotated): calls that
        select a profile from now on get the new key, calls under way keep the one they
        selected. False when the profile already has this key."""
        current = next((p for p in self._profiles if p.name == name), None)
        if current is None or current.vault_api_key == key:
            return False
        renewed = dataclasses.replace(current, vault_api_key=key)
        self._index(tuple(renewed if p is current else p for p in self._profiles))
        return True

    def select(self, caller: Caller) -> Profile:
        if caller.client_id is not None:
            profile = self._by_client.get(caller.client_id)
            if profile is None:
                raise CallerWithoutProfile()
            if profile.peers:
                if caller.peer is None:
                    raise CallerPeerMissing()
                if not any(matches(caller.peer, s) for s in profile.peers):
                    raise CallerPeerNotAllowed({"profile": profile.name})
            return profile
        if caller.peer is not None:
            for profile in self._peer_only:
                if any(matches(caller.peer, s) for s in profile.peers):
                    return profile
        raise CallerWithoutProfile()
