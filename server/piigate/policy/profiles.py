"""Stage 2: the caller's one service profile, pure. No profile, no data."""

from __future__ import annotations

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
        profiles = tuple(profiles)
        self._by_client = {client: p for p in profiles for client in p.callers}
        self._peer_only = tuple(p for p in profiles if not p.callers)

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
