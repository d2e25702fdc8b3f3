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


def pool_levels(args: argparse.Namespace) -> list[int]:
    """The in-flight levels that need a pool: the asked ones, 1 for the stage breakdown,
    the batch rows' levels."""
    levels = list(args.inflight_levels)
    extra = [1] if any(k.startswith("piigate-stages") for k in args.server_list) else []
    if any(k.startswith("piigate-batch") for k in args.server_list):
        extra += args.batch_inflight_levels
    return levels + [n for n in dict.fromkeys(extra) if n not in levels]


async def build_workload(stack: Stack, args: argparse.Namespace) -> Workload:
    """Seed users and mint every token up front, so no run waits on the issuer."""
    levels = [str(n) for n in pool_levels(args)] + (["profile"] if args.profile else [])
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


def spec_tokens(workload: Workload, level: str) -> list[SubjectToken]:
    """What a run's indexes point into: the warm-up tokens, then the level's pool."""
    return [*workload.warm, *workload.pools[level]]


def planned(workload: Workload, level: str) -> list[int]:
    """The level's planned sequence (`bench.traffic`), as indexes into `spec_tokens`."""
    return [len(workload.warm) + i for i in workload.sequences[level]]


def all_fresh(workload: Workload, level: str, max_calls: int) -> list[int]:
    """Every call a token never presented before: the pool in order, no repeats (the run
    ends when the pool does, if the duration has not)."""
    size = min(len(workload.pools[level]), max_calls)
    return [len(workload.warm) + i for i in range(size)]


def all_warm(workload: Workload, max_calls: int) -> list[int]:
    """Every call a token the warm-up presented: a gateway's verified-token cache hits."""
    return [i % len(workload.warm) for i in range(max_calls)]


def load_spec(
    target: str, level: str, inflight: int, workload: Workload, args: argparse.Namespace,
    sequence: list[int] | None = None,
) -> load.LoadSpec:  # fmt: skip
    """Warm-up tokens first, then the level's pool; `sequence` (default: the level's
    planned one) indexes into both (`spec_tokens`)."""
    tokens = [(t.caller, t.token) for t in spec_tokens(workload, level)]
    return load.LoadSpec(
        target=target,
        per_connection=traffic.split_inflight(inflight, args.connections),
        duration_s=args.duration,
        warmup_s=args.warmup,
        callers=workload.callers,
        tokens=tokens,
        warmup=list(range(len(workload.warm))),
        sequence=planned(workload, level) if sequence is None else sequence,
    )


def batch_groups(tokens: list[SubjectToken], size: int, pad: bool) -> list[list[SubjectToken]]:
    """`tokens` in groups of `size`, one caller per group (a batch has one caller). With
    `pad`, a caller's short last group is filled by cycling its tokens; without, dropped."""
    groups: list[list[SubjectToken]] = []
    for caller in dict.fromkeys(t.caller for t in tokens):
        mine = [t for t in tokens if t.caller == caller]
        for start in range(0, len(mine), size):
            group = mine[start : start + size]
            if len(group) < size and pad:
                group = [mine[(start + i) % len(mine)] for i in range(size)]
            if len(group) == size:
                groups.append(group)
    return groups


def batch_spec(
    target: str, level: str, inflight: int, workload: Workload, args: argparse.Namespace,
    size: int,
) -> tuple[load.LoadSpec, list[list[SubjectToken]]]:  # fmt: skip
    """BatchDetokenize of `size` tokens per call: warm-up groups from the warm-up tokens,
    measured groups from the level's pool (one caller each, interleaved at the
    support share), drawn like single calls (`bench.traffic.plan_sequence` over groups).
    Also the warm-up groups, for the preflight."""
    warm = batch_groups(workload.warm, size, pad=True)
    pool = workload.pools[level]
    # Padded: a caller's last group repeats a few of its first tokens, rather than a pool
    # smaller than a batch giving no group at all.
    support = [g for g in batch_groups(pool, size, pad=True) if g[0].caller == "support-tool"]
    fhir = [g for g in batch_groups(pool, size, pad=True) if g[0].caller != "support-tool"]
    groups = traffic.interleave(fhir, support, args.support_share, args.seed)
    sequence = traffic.plan_sequence(len(groups), args.repeat_share, args.max_calls, args.seed)
    tokens = [(t.caller, t.token) for group in (*warm, *groups) for t in group]
    spec = load.LoadSpec(
        target=target,
        per_connection=traffic.split_inflight(inflight, args.connections),
        duration_s=args.duration, warmup_s=args.warmup, callers=workload.callers,
        tokens=tokens, warmup=list(range(len(warm))),
        sequence=[len(warm) + i for i in sequence], batch=size,
    )  # fmt: skip
    return spec, warm
