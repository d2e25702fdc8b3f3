"""Where a lone call's time goes: `piigate serve` with a clock around each stage.

    python -m bench.stages --out STAGES.json serve --config gateway.toml --listen ...

The benchmark's `piigate-stages` rows run piigate exactly as `python -m piigate serve`
(same code, same config, same thread-pool server and event loop), in a process that has
first wrapped the methods each stage of the request's path runs in (`PROBES`): each
wrapper adds `perf_counter_ns` around the call to the call's record. Nothing in piigate
is changed or configured for this; the wrappers cost a microsecond or two each (about a
dozen per call), which the row's own p50 beside the `piigate` row shows. When the server
stops, every call's record is written to `--out` as JSON; the benchmark keeps those that
started in its measured phase (`time.monotonic`, one clock for every process) and
`summarize` gives the p50 and mean of each stage.

A record is made on the handler thread (`BridgedService._run`) and followed onto the event
loop through the `Call` object the bridge hands over; on the loop a context variable
carries it into every stage. Stages between two probes (the hand-offs, what is left
unaccounted on the loop) are differences of timestamps in the same record. A probe whose
target no longer exists (the code moved) is reported as missing, not guessed.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import json
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

Record = dict[str, float]
_current: contextvars.ContextVar[Record | None] = contextvars.ContextVar("stage", default=None)
_thread = threading.local()
_by_call: dict[int, Record] = {}
_records: list[Record] = []
_now = time.perf_counter_ns

# (stage, "module:attribute path", how): "async"/"sync" add the call's duration to the
# stage; "handler", "read" and "loop" also mark the hand-offs between thread and loop.
# Alternatives are separated by "|" (the first found is wrapped): where the code has
# lived, so the breakdown survives a move in either direction. A function is wrapped in
# the module that calls it (its own name there), not where it is defined.
PROBES: tuple[tuple[str, str, str], ...] = (
    ("handler thread, total", "piigate.transport.bridge:BridgedService._run", "handler"),
    ("read the call (metadata, deadline, peer)", "piigate.transport.bridge:call_of", "read"),
    ("on the loop, total", "piigate.transport.service:DetokenizationService.detokenize", "loop"),
    ("pipeline", "piigate.pipeline:DetokenizationPipeline.run", "async"),
    ("caller verification", "piigate.identity.caller:BearerCallerAuthenticator.identify",
     "async"),
    ("subject verification",
     "piigate.identity.resolution:verify_subject|piigate.pipeline:verify_subject", "async"),
    ("decision (stages 3-5)",
     "piigate.identity.resolution:SubjectDecider.decide|piigate.pipeline:SubjectDecider.decide",
     "async"),
    ("abuse limits", "piigate.limits.abuse:AbuseGuard.admit", "async"),
    ("vault read (coalescer)", "piigate.vault.coalescing:CoalescingVault.detokenize", "async"),
    ("vault HTTP client", "piigate.vault.client:VaultClient.detokenize", "async"),
    ("shaping", "piigate.pipeline:disclose", "sync"),
    ("audit record", "piigate.audit.recorder:AuditRecorder.allowed", "async"),
    ("audit sink write", "piigate.audit.sink:ChainedJsonLinesSink.write", "async"),
    ("audit fsync wait", "piigate.audit.sink:ChainedJsonLinesSink._wait_durable", "async"),
    ("response message", "piigate.transport.service:_response", "sync"),
)  # fmt: skip

# What the report shows, in the order a call travels: (label, how it is computed).
# A name is a probe; "a - b - c" is a difference within each record.
SHOWN: tuple[tuple[str, str], ...] = (
    ("read the call on the handler thread", "read the call (metadata, deadline, peer)"),
    ("thread -> loop hand-off (LoopHandoff.submit to the task's first step)",
     "hand-off to the loop"),
    ("caller verification", "caller verification"),
    ("subject verification", "subject verification"),
    ("decision, less verification", "decision (stages 3-5) - subject verification"),
    ("abuse limits", "abuse limits"),
    ("coalescer", "vault read (coalescer) - vault HTTP client"),
    ("vault HTTP client (round trip)", "vault HTTP client"),
    ("shaping", "shaping"),
    ("audit: build the event", "audit record - audit sink write"),
    ("audit: serialise, chain, write", "audit sink write - audit fsync wait"),
    ("audit: fsync wait", "audit fsync wait"),
    ("response message", "response message"),
    ("rest of the loop's work", "on the loop, total - caller verification - decision (stages 3-5)"
     " - abuse limits - vault read (coalescer) - shaping - audit record - response message"),
    ("loop -> thread hand-back (the answer to the waiting handler)", "hand-back to the thread"),
    ("handler thread, total", "handler thread, total"),
)  # fmt: skip


def _resolve(target: str) -> tuple[Any, str] | None:
    """(owner, attribute) for the first of "module:Class.attr|module:function|..." that
    exists; None if none does."""
    for alternative in target.split("|"):
        found = _resolve_one(alternative.strip())
        if found is not None:
            return found
    return None


def _resolve_one(target: str) -> tuple[Any, str] | None:
    module_name, _, path = target.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent, None)
        if owner is None:
            return None
    return (owner, attribute) if hasattr(owner, attribute) else None


def _add(record: Record | None, stage: str, ns: int) -> None:
    if record is not None:
        record[stage] = record.get(stage, 0) + ns


def _wrap(stage: str, how: str, original: Callable[..., Any]) -> Callable[..., Any]:
    if how == "handler":

        @functools.wraps(original)
        def handler(*args: Any, **kwargs: Any) -> Any:
            record: Record = {"_mono": time.monotonic()}
            _thread.record = record
            began = _now()
            try:
                return original(*args, **kwargs)
            finally:
                end = _now()
                record[stage] = end - began
                if "_loop_end" in record:
                    record["hand-back to the thread"] = end - record["_loop_end"]
                _records.append(record)

        return handler
    if how == "read":

        @functools.wraps(original)
        def read(*args: Any, **kwargs: Any) -> Any:
            began = _now()
            call = original(*args, **kwargs)
            end = _now()
            record = getattr(_thread, "record", None)
            if record is not None:
                record[stage], record["_read_end"] = end - began, end
                _by_call[id(call)] = record
            return call

        return read
    if how == "loop":

        @functools.wraps(original)
        async def loop(self: Any, call: Any, *args: Any, **kwargs: Any) -> Any:
            began = _now()
            record = _by_call.pop(id(call), None)
            if record is not None and "_read_end" in record:
                record["hand-off to the loop"] = began - record["_read_end"]
            token = _current.set(record)
            try:
                return await original(self, call, *args, **kwargs)
            finally:
                end = _now()
                if record is not None:
                    record[stage], record["_loop_end"] = end - began, end
                _current.reset(token)

        return loop
    if how == "async":

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            record, began = _current.get(), _now()
            try:
                return await original(*args, **kwargs)
            finally:
                _add(record, stage, _now() - began)

        return timed_async

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        record, began = _current.get(), _now()
        try:
            return original(*args, **kwargs)
        finally:
            _add(record, stage, _now() - began)

    return timed


def install() -> list[str]:
    """Wrap every probe's target; the stages whose target is gone."""
    missing = []
    for stage, target, how in PROBES:
        found = _resolve(target)
        if found is None:
            missing.append(stage)
            continue
        owner, attribute = found
        setattr(owner, attribute, _wrap(stage, how, getattr(owner, attribute)))
    return missing


# --- the report ---------------------------------------------------------------------------
def _value(record: Record, formula: str) -> float | None:
    """A probe's duration in the record, or a difference of them; None when the first term
    is absent (the stage did not run in this call). An absent later term counts 0."""
    first, *rest = (term.strip() for term in formula.split(" - "))
    if first not in record:
        return None
    return record[first] - sum(record.get(term, 0.0) for term in rest)


def summarize(
    records: Iterable[Record], missing: Sequence[str], e2e_p50_ms: float | None = None
) -> list[dict[str, Any]]:
    """Per shown stage: p50 and mean in µs over the calls that ran it, and how many did."""
    records = list(records)
    rows: list[dict[str, Any]] = []
    for label, formula in SHOWN:
        gone = [t.strip() for t in formula.split(" - ") if t.strip() in missing]
        values = [v for r in records if (v := _value(r, formula)) is not None]
        rows.append({
            "stage": label,
            "p50_us": statistics.median(values) / 1000 if values else math.nan,
            "mean_us": statistics.fmean(values) / 1000 if values else math.nan,
            "calls": len(values),
            "note": f"probe missing: {', '.join(gone)}" if gone else "",
        })  # fmt: skip
    if e2e_p50_ms is not None and rows[-1]["calls"]:
        rows.append({
            "stage": "outside the handler: gRPC core, HTTP/2, loopback (e2e p50 - handler p50)",
            "p50_us": e2e_p50_ms * 1000 - rows[-1]["p50_us"], "mean_us": math.nan,
            "calls": rows[-1]["calls"], "note": "",
        })  # fmt: skip
    return rows


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """One column of p50 µs per run (e.g. cached / fresh subject tokens)."""
    names = list(runs)
    if not names:
        return ""
    first = runs[names[0]]
    header = ["stage (p50 µs, 1 in flight)", *names]
    lines = [header]
    for i, row in enumerate(first):
        cells = [row["stage"] + (f"  [{row['note']}]" if row["note"] else "")]
        for name in names:
            p50 = runs[name][i]["p50_us"] if i < len(runs[name]) else math.nan
            cells.append("-" if not math.isfinite(p50) else f"{p50:,.0f}")
        lines.append(cells)
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join([line[0].ljust(widths[0])] +
                   [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def read_records(path: Path, since: float, until: float) -> tuple[list[Record], list[str]]:
    """The records of calls that began within [since, until] (time.monotonic)."""
    data = json.loads(path.read_text())
    records = [r for r in data["records"] if since <= r.get("_mono", -1.0) <= until]
    return records, list(data["missing"])


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[0] != "--out":
        print("usage: python -m bench.stages --out FILE serve --config ...", file=sys.stderr)
        return 2
    out = Path(argv[1])
    missing = install()
    from piigate.cli.main import main as piigate_main

    try:
        return piigate_main(argv[2:])
    finally:
        clean = [{k: v for k, v in r.items() if not k.startswith("_") or k == "_mono"}
                 for r in list(_records)]  # fmt: skip
        out.write_text(json.dumps({"missing": missing, "records": clean}))


if __name__ == "__main__":
    sys.exit(main())
