"""Stage 9: the one place that records outcomes: it writes each call's audit event and
counts its decision.

The pipeline hands it every outcome of every call, whatever raised (its envelope catches
everything from the subject stage through shaping), so an event per decision holds by
construction rather than by where code happens to catch. How an error is recorded
(denied or failed, an event kind of its own) is read from the error class
(`piigate.errors`); anything that is not a `GatewayError` is recorded as a failed call
with reason INTERNAL.

Fail closed: an allowed outcome whose event cannot be written is returned as
AUDIT_UNAVAILABLE instead of its data. A refusal whose event cannot be written is still
refused (no PII is being returned), and the operator is told in the log.

Each refusal or failure is also one log line (`piigate.telemetry.logs`): INFO for a
denied call (the caller's or its user's doing), WARNING for a failed one (piigate's or a
dependency's), with the event's request id, caller, profile and error reason, so an SRE
sees failures without reading the trail and support finds the event from the id. Allowed
calls are in the trail and are not logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from piigate.audit.event import AuditFacts, AuditSink, FieldDisclosure
from piigate.errors import GatewayError, TokenCarriesDeniedClaim
from piigate.policy.shaping import Disclosure
from piigate.telemetry.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class AuditRecorder:
    """Writes the audit event of every outcome and counts every decision."""

    def __init__(self, sink: AuditSink, metrics: GatewayMetrics) -> None:
        self._sink = sink
        self._metrics = metrics

    async def allowed(self, facts: AuditFacts, disclosure: Disclosure) -> Disclosure | GatewayError:
        """Record a disclosure; its data may leave only if this returns it."""
        fields = [FieldDisclosure(f.name, f.disclosure, disclosure.notes.get(f.name))
                  for f in disclosure.fields]
        try:
            await self._sink.write(facts.event("allowed", fields))
        except GatewayError as exc:  # the sink's own AUDIT_UNAVAILABLE
            self._count(facts, "failed", exc.reason)
            log.warning("call failed: %s", exc.reason,
                        extra=_fields(facts, "failed", exc.reason))
            return exc
        self._count(facts, "allowed", "OK")
        return disclosure

    async def refused(self, facts: AuditFacts, exc: BaseException) -> GatewayError:
        """Record a refusal or failure; returns the error to answer with (an unexpected
        exception becomes a bare INTERNAL: its text never leaves the process)."""
        if isinstance(exc, GatewayError):
            error = exc
        else:
            log.error("unexpected %s in the request path; answered INTERNAL", type(exc).__name__,
                      extra={"request_id": facts.request_id})
            error = GatewayError()
        if isinstance(error, TokenCarriesDeniedClaim):
            self._metrics.denied_claim(str(facts.subject_iss), error.metadata.get("claim", "-"))
        event = facts.event(error.audit_outcome, error_reason=error.reason,
                            event=error.audit_event)
        level = logging.INFO if event.outcome == "denied" else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "call %s: %s", event.outcome, error.reason,
                    extra=_fields(facts, event.outcome, error.reason))
        try:
            await self._sink.write(event)
        except GatewayError:
            log.error("audit sink failed while recording a %s outcome", event.outcome,
                      extra={"request_id": facts.request_id})
        finally:  # counted once written (or not), as a disclosure is: the same durations
            self._count(facts, event.outcome, error.reason)
        return error

    def _count(self, facts: AuditFacts, outcome: str, reason: str) -> None:
        """The decision's counter and its duration since the call began (`began`)."""
        self._metrics.decided(
            "Detokenize" if facts.batch_id is None else "BatchDetokenize",
            facts.profile or "-", outcome, reason, time.perf_counter() - facts.began)


def _fields(facts: AuditFacts, outcome: str, error_reason: str) -> dict[str, Any]:
    """A refusal's log fields: ids, configuration names and codes, never a subject."""
    return {"request_id": facts.request_id, "batch_id": facts.batch_id, "caller": facts.caller,
            "profile": facts.profile, "outcome": outcome, "error_reason": error_reason}
