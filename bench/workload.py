"""The workload every server gets: seeded users, minted tokens, planned call sequences.

Everything is minted before the first run, so no run waits on the issuer, and every server
gets exactly the same calls at each level (`bench.traffic` explains the sequences). A
level's pool is its own: a token first presented at 16 in flight is never "fresh" at 64.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench import load, traffic
from bench.stack import (
    Stack,
    SubjectToken,
    mint_caller_tokens,
    mint_user_tokens,
    seed_users,
)
from piigate_dev import demo

WARM_TOKENS = 64  # warm-up and preflight tokens, never part of a measured pool


@dataclass
class Workload:
    """The tokens every run presents; identical for every server."""

    callers: dict[str, str]
    warm: list[SubjectToken]
    pools: dict[str, list[SubjectToken]]  # per level ("16", ..., "profile")
    sequences: dict[str, list[int]]


async def build_workload(stack: Stack, args: argparse.Namespace) -> Workload:
    """Seed users and mint every token up front, so no run waits on the issuer."""
    levels = [str(n) for n in args.inflight_levels] + (["profile"] if args.profile else [])
    size = args.fresh_per_level
    support_per_pool = round(size * args.support_share)
    fhir_needed = (size - support_per_pool) * len(levels) + WARM_TOKENS // 2
    support_needed = support_per_pool * len(levels) + WARM_TOKENS // 2
    fhir = await seed_users(stack, args.users)  # one token per migrated user
    extra = max(0, fhir_needed - len(fhir))
    users = args.users
    wanted = [(i % users, demo.FHIR_AUDIENCE) for i in range(extra)]
    wanted += [(i % users, demo.SUPPORT_AUDIENCE) for i in range(support_needed)]
    minted = await mint_user_tokens(stack, wanted)
    fhir += minted[:extra]
    support = minted[extra:]
    callers = await mint_caller_tokens(stack)

    half = WARM_TOKENS // 2
    warm = traffic.interleave(fhir[:half], support[:half], 0.5, args.seed)
    fhir, support = fhir[half:], support[half:]
    pools: dict[str, list[SubjectToken]] = {}
    sequences: dict[str, list[int]] = {}
    for i, level in enumerate(levels):
        n_fhir = size - support_per_pool
        pool = traffic.interleave(
            fhir[i * n_fhir : (i + 1) * n_fhir],
            support[i * support_per_pool : (i + 1) * support_per_pool],
            args.support_share, args.seed + i,
        )  # fmt: skip
        pools[level] = pool
        sequences[level] = traffic.plan_sequence(
            len(pool), args.repeat_share, args.max_calls, args.seed + 100 + i
        )
    return Workload(callers, warm, pools, sequences)


def load_spec(
    target: str, level: str, inflight: int, workload: Workload, args: argparse.Namespace
) -> load.LoadSpec:
    """Warm-up tokens first, then the level's pool; the sequence indexes past the warm-up."""
    warm = workload.warm
    tokens = [(t.caller, t.token) for t in (*warm, *workload.pools[level])]
    return load.LoadSpec(
        target=target,
        per_connection=traffic.split_inflight(inflight, args.connections),
        duration_s=args.duration,
        warmup_s=args.warmup,
        callers=workload.callers,
        tokens=tokens,
        warmup=list(range(len(warm))),
        sequence=[len(warm) + i for i in workload.sequences[level]],
    )
