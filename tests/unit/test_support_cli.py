"""`piigate-support`'s pure parts: the customer list, the options, the retry rules, the
run over a scripted gateway, and the three output formats."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from piigate_client import Field
from piigate_client.support import customers as customer_input
from piigate_client.support.customers import Customer, InputError
from piigate_client.support.gateway import Query, chunk_plan
from piigate_client.support.lookup import (
    CallFailed,
    Failed,
    Failure,
    Found,
    Outcome,
    run,
)
from piigate_client.support.main import run_command
from piigate_client.support.options import UsageError, load
from piigate_client.support.output import write
from piigate_client.support.retry import RetryPolicy, retry_delay

ALICE = Customer("auth0", "auth0|alice")
BOB = Customer("auth0", "auth0|bob")
SSN = Field("ssn", "***-**-1234", "masked")


# --- customers ------------------------------------------------------------------------
def test_csv_columns_by_header_in_any_order_and_case() -> None:
    text = "Ticket,SUBJECT,Issuer\nSUP-1,auth0|alice,auth0\n,,\nSUP-2,\"google|1,2\",google\n"
    assert customer_input.from_csv(text) == [ALICE, Customer("google", "google|1,2")]


@pytest.mark.parametrize(("text", "complaint"), [
    ("", "the CSV is empty"),
    ("issuer,name\nauth0,x\n", "no subject column"),
    ("name\nx\n", "no issuer or subject column"),
    ("issuer,subject\nauth0\n", "line 2 has 1 columns"),
    ("issuer,subject\nauth0, \n", "line 2, subject is empty"),
    ("issuer,subject\n", "no customers"),
])
def test_csv_complaints_name_the_line_never_the_value(text: str, complaint: str) -> None:
    with pytest.raises(InputError, match=complaint) as caught:
        customer_input.from_csv(text)
    assert "auth0|" not in str(caught.value)


def test_csv_line_numbers_count_quoted_newlines() -> None:
    with pytest.raises(InputError, match="line 4, subject is empty"):
        customer_input.from_csv('issuer,subject,note\nauth0,auth0|a,"two\nlines"\nauth0,,x\n')


def test_lines_skip_blanks_and_comments() -> None:
    lines = ["# exported 2024-01-01\n", "auth0|alice\n", "\n", "  auth0|bob  \n"]
    assert customer_input.from_lines(lines, "auth0") == [ALICE, BOB]
    with pytest.raises(InputError, match="line 1 is not an identifier"):
        customer_input.from_lines(["a\x00b\n"], "auth0")


# --- options --------------------------------------------------------------------------
ENVIRON = {"PIIGATE_TARGET": "127.0.0.1:50051", "PIIGATE_AGENT_TOKEN": "agent-jwt",
           "PIIGATE_TOKEN_URL": "http://127.0.0.1:1/oauth/token",
           "PIIGATE_CLIENT_ID": "support-tool", "PIIGATE_CLIENT_SECRET": "s3cret"}
ONE = ["lookup", "--issuer", "auth0", "--subject", "auth0|alice", "--ticket", "SUP-1",
       "--plaintext"]


def test_options_from_flags_and_environment() -> None:
    options = load([*ONE, "--fields", "ssn,email", "--fields", "ssn",
                    "--reason", "AccountManagement"], ENVIRON, io.StringIO())
    assert options.customers == (ALICE,)
    assert not options.batch
    assert (options.fields, options.reason, options.ticket) == (
        ("ssn", "email"), "AccountManagement", "SUP-1")
    assert options.agent_token == "agent-jwt"
    assert options.tls is None
    assert options.caller is not None
    assert options.caller.secret == "s3cret"
    assert options.caller.audience == "piigate"
    assert "agent-jwt" not in repr(options)
    assert "s3cret" not in repr(options)


def test_the_agent_token_file_beats_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "agent.jwt"
    path.write_text("from-file\n")
    options = load([*ONE, "--agent-token-file", str(path)], ENVIRON, io.StringIO())
    assert options.agent_token == "from-file"


def test_batch_from_stdin_lines_and_csv(tmp_path: Path) -> None:
    stdin = io.StringIO("auth0|alice\nauth0|bob\n")
    options = load(["lookup", "--issuer", "auth0", "--stdin", "--ticket", "T", "--plaintext"],
                   ENVIRON, stdin)
    assert options.customers == (ALICE, BOB)
    assert options.batch
    path = tmp_path / "c.csv"
    path.write_text("\ufeffissuer,subject\nauth0,auth0|bob\n", encoding="utf-8")
    options = load(["lookup", "--csv", str(path), "--ticket", "T", "--plaintext"], ENVIRON)
    assert options.customers == (BOB,)


@pytest.mark.parametrize(("argv", "environ", "complaint"), [
    (ONE, {**ENVIRON, "PIIGATE_AGENT_TOKEN": ""}, "no agent token"),
    (ONE, {k: v for k, v in ENVIRON.items() if k != "PIIGATE_TARGET"}, "no gateway"),
    (ONE, {k: v for k, v in ENVIRON.items() if "CLIENT" not in k and "TOKEN_URL" not in k},
     "no caller credential"),
    (ONE, {**ENVIRON, "PIIGATE_CLIENT_SECRET": ""}, "client secret"),
    ([*ONE[:-3], "--ticket", "x" * 129, "--plaintext"], ENVIRON, "--ticket must be"),
    ([*ONE, "--csv", "f.csv"], ENVIRON, "one way"),
    (["lookup", "--subject", "s", "--ticket", "T", "--plaintext"], ENVIRON, "need --issuer"),
    ([*ONE, "--adhoc-reason", "why"], ENVIRON, "--reason Other only"),
    ([*ONE, "--reason", "Other"], ENVIRON, "needs --adhoc-reason"),
    ([*ONE, "--tls-ca", "ca.pem"], ENVIRON, "do not go together"),
    ([*ONE, "--max-batch-size", "0"], ENVIRON, "at least 1"),
    ([*ONE, "--agent-token-file", "/nonexistent/agent"], ENVIRON, "cannot read"),
])
def test_usage_errors(argv: list[str], environ: dict[str, str], complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint) as caught:
        load(argv, environ, io.StringIO())
    assert "s3cret" not in str(caught.value)
    assert "agent-jwt" not in str(caught.value)


def test_a_usage_error_exits_2_and_sends_nothing() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run_command(ONE, {**ENVIRON, "PIIGATE_AGENT_TOKEN": ""}, io.StringIO(), out, err)
    assert code == 2
    assert out.getvalue() == ""
    assert err.getvalue().startswith("piigate-support: no agent token")


def test_an_unreachable_gateway_exits_3_with_every_row_failed() -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = [*ONE[:-1], "--plaintext", "--output", "jsonl", "--max-attempts", "1",
            "--timeout", "0.5"]
    environ = {**ENVIRON, "PIIGATE_TARGET": "127.0.0.1:1"}
    environ = {k: v for k, v in environ.items() if k != "PIIGATE_TOKEN_URL"}
    environ.pop("PIIGATE_CLIENT_ID")
    code = run_command([*argv, "--tls-cert", "x"], environ, io.StringIO(), out, err)
    assert code == 2  # --plaintext with a certificate: caught before any call
    environ.update(PIIGATE_TOKEN_URL="http://127.0.0.1:1/t", PIIGATE_CLIENT_ID="c")
    code = run_command(argv, environ, io.StringIO(), out, err)
    assert code == 3
    (row,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert row == {"issuer": "auth0", "subject": "auth0|alice", "status": "failed",
                   "code": "TOKEN_ENDPOINT", "reason": "unreachable", "request_id": ""}
    assert "the call failed: TOKEN_ENDPOINT unreachable" in err.getvalue()


# --- retry ----------------------------------------------------------------------------
POLICY = RetryPolicy(max_attempts=3, max_wait_s=10, backoff_s=0.5, max_backoff_s=1.5)


@pytest.mark.parametrize(("code", "after", "attempts", "delay"), [
    ("RESOURCE_EXHAUSTED", 2.0, 1, 2.0),       # RetryInfo says when
    ("RESOURCE_EXHAUSTED", None, 1, None),     # a harvesting cap: final
    ("RESOURCE_EXHAUSTED", 11.0, 1, None),     # longer than max_wait_s
    ("UNAVAILABLE", None, 1, 0.5),
    ("UNAVAILABLE", None, 2, 1.0),
    ("UNAVAILABLE", 0.25, 2, 0.25),
    ("UNAVAILABLE", None, 3, None),            # attempts used up
    ("PERMISSION_DENIED", 1.0, 1, None),       # an answer, not a fault
    ("DEADLINE_EXCEEDED", None, 1, None),      # it may have disclosed: never again
    ("TOKEN_ENDPOINT", None, 1, None),
])
def test_retry_rules(code: str, after: float | None, attempts: int,
                     delay: float | None) -> None:
    assert retry_delay(code, after, attempts, POLICY) == delay


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_s=0.5, max_backoff_s=1.5)
    assert retry_delay("UNAVAILABLE", None, 5, policy) == 1.5


# --- the run --------------------------------------------------------------------------
class ScriptedGateway:
    """Answers from a script: per call, an exception or a function of the customers."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.calls: list[list[Customer]] = []

    def lookup(self, customers: Sequence[Customer]) -> list[Outcome]:
        self.calls.append(list(customers))
        step = self.script.pop(0)
        if isinstance(step, CallFailed):
            raise step
        assert callable(step)
        answer: list[Outcome] = step(customers)
        return answer


def found(customers: Sequence[Customer]) -> list[Outcome]:
    return [Found(c, (SSN,), f"req-{c.subject}") for c in customers]


def by_size(customers: Sequence[Customer], max_items: int) -> list[list[Customer]]:
    return [list(customers[i:i + max_items]) for i in range(0, len(customers), max_items)]


def people(n: int) -> list[Customer]:
    return [Customer("auth0", f"auth0|{i}") for i in range(n)]


def test_run_chunks_in_order_and_reports_progress() -> None:
    gateway = ScriptedGateway([found] * 3)
    moved: list[int] = []
    report = run(people(5), gateway, by_size, max_items=2, policy=POLICY, sleep=_no_sleep,
                 advance=moved.append)
    assert [len(c) for c in gateway.calls] == [2, 2, 1]
    assert [o.customer for o in report.outcomes] == people(5)
    assert report.call_failure is None
    assert sum(moved) == 5


def test_a_rate_limited_item_is_asked_again_after_its_retry_info() -> None:
    def one_limited(customers: Sequence[Customer]) -> list[Outcome]:
        return [Failed(c, Failure("RESOURCE_EXHAUSTED", "RATE_LIMITED", "r", 1.5))
                if c.subject == "auth0|1" else Found(c, (SSN,), "r") for c in customers]

    slept: list[float] = []
    gateway = ScriptedGateway([one_limited, found])
    report = run(people(3), gateway, by_size, max_items=10, policy=POLICY,
                 sleep=slept.append)
    assert gateway.calls[1] == [people(3)[1]]
    assert slept == [1.5]
    assert all(isinstance(o, Found) for o in report.outcomes)
    assert [o.customer for o in report.outcomes] == people(3)


def test_a_harvesting_cap_is_final_and_exits_with_the_row_failed() -> None:
    def capped(customers: Sequence[Customer]) -> list[Outcome]:
        return [Failed(c, Failure("RESOURCE_EXHAUSTED", "DISTINCT_SUBJECTS_EXCEEDED", "r"))
                for c in customers]

    gateway = ScriptedGateway([capped])
    report = run(people(2), gateway, by_size, max_items=10, policy=POLICY, sleep=_no_sleep)
    assert len(gateway.calls) == 1
    assert report.call_failure is None
    assert all(isinstance(o, Failed) for o in report.outcomes)


def test_unavailable_calls_are_retried_then_end_the_run() -> None:
    down = CallFailed(Failure("UNAVAILABLE", "VAULT_UNAVAILABLE", "req-9"))
    slept: list[float] = []
    gateway = ScriptedGateway([found, down, down, down])
    report = run(people(4), gateway, by_size, max_items=2, policy=POLICY, sleep=slept.append)
    assert len(gateway.calls) == 4
    assert slept == [0.5, 1.0]
    assert report.call_failure == down.failure
    assert [type(o).__name__ for o in report.outcomes] == ["Found", "Found", "Failed",
                                                           "Failed"]


def test_batch_too_large_replans_at_the_gateways_size() -> None:
    too_large = CallFailed(Failure("INVALID_ARGUMENT", "BATCH_TOO_LARGE", "r"), batch_max=2)
    gateway = ScriptedGateway([found, too_large, found, found])
    report = run(people(7), gateway, by_size, max_items=3, policy=POLICY, sleep=_no_sleep)
    assert [len(c) for c in gateway.calls] == [3, 3, 2, 2]
    assert [o.customer for o in report.outcomes] == people(7)
    assert all(isinstance(o, Found) for o in report.outcomes)


def test_a_plan_that_loses_customers_is_refused() -> None:
    with pytest.raises(ValueError, match="in order"):
        run(people(3), ScriptedGateway([]), lambda c, n: [list(c[:1])], max_items=3,
            policy=POLICY, sleep=_no_sleep)


def test_chunks_fit_the_message_size() -> None:
    query = Query(agent_token="a" * 3000, purpose="SUP-1", fields=("ssn",))
    plan = chunk_plan(query, 4096)
    customers = people(200)
    chunks = plan(customers, 100)
    assert [c for chunk in chunks for c in chunk] == customers
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert all(query.request(chunk).ByteSize() <= 4096 for chunk in chunks)
    assert len(chunks) > 3  # the message size cut them, not the 100


def _no_sleep(seconds: float) -> None:
    raise AssertionError("no wait expected")


# --- output ---------------------------------------------------------------------------
OUTCOMES: list[Outcome] = [
    Found(ALICE, (SSN, Field("email", "", "redacted")), "req-1"),
    Failed(BOB, Failure("NOT_FOUND", "SUBJECT_NOT_FOUND", "req-2")),
]


def test_jsonl_round_trips() -> None:
    out = io.StringIO()
    write(OUTCOMES, "jsonl", ("ssn",), out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows == [
        {"issuer": "auth0", "subject": "auth0|alice", "status": "ok", "request_id": "req-1",
         "fields": {"ssn": {"value": "***-**-1234", "disclosure": "masked"},
                    "email": {"value": "", "disclosure": "redacted"}}},
        {"issuer": "auth0", "subject": "auth0|bob", "status": "failed", "code": "NOT_FOUND",
         "reason": "SUBJECT_NOT_FOUND", "request_id": "req-2"},
    ]


def test_csv_round_trips_with_asked_fields_first() -> None:
    out = io.StringIO()
    write(OUTCOMES, "csv", ("ssn",), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["issuer", "subject", "status", "code", "reason", "request_id",
                             "ssn", "ssn_disclosure", "email", "email_disclosure"]
    assert (rows[0]["ssn"], rows[0]["ssn_disclosure"], rows[0]["status"]) == (
        "***-**-1234", "masked", "ok")
    assert (rows[1]["status"], rows[1]["reason"], rows[1]["ssn"]) == (
        "failed", "SUBJECT_NOT_FOUND", "")


def test_table_shows_value_with_its_kind_and_prints_markup_literally() -> None:
    out = io.StringIO()
    odd = Found(Customer("auth0", "auth0|[bold]x[/bold]"), (SSN,), "req-3")
    write([*OUTCOMES, odd], "table", ("ssn",), out)
    text = out.getvalue()
    assert "***-**-1234 (masked)" in text
    assert "SUBJECT_NOT_FOUND" in text
    assert "[bold]x[/bold]" in text
    assert "\x1b[" not in text


def test_without_rich_the_table_is_a_usage_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # `import rich` now raises ImportError
    out, err = io.StringIO(), io.StringIO()
    assert run_command([*ONE, "--output", "table"], ENVIRON, io.StringIO(), out, err) == 2
    assert "piigate-client[support]" in err.getvalue()
    assert out.getvalue() == ""


def test_a_call_failing_on_a_retry_keeps_what_the_first_call_found() -> None:
    def one_limited(customers: Sequence[Customer]) -> list[Outcome]:
        return [Failed(c, Failure("RESOURCE_EXHAUSTED", "RATE_LIMITED", "r", 0.5))
                if c.subject == "auth0|0" else Found(c, (SSN,), "r") for c in customers]

    refused = CallFailed(Failure("UNAUTHENTICATED", "TOKEN_EXPIRED", "req-5"))
    moved: list[int] = []
    gateway = ScriptedGateway([one_limited, refused])
    report = run(people(5), gateway, by_size, max_items=3, policy=POLICY, sleep=lambda s: None,
                 advance=moved.append)
    assert [type(o).__name__ for o in report.outcomes] == [
        "Failed", "Found", "Found", "Failed", "Failed"]
    assert report.call_failure == refused.failure
    assert sum(moved) == 5
    assert len(gateway.calls) == 2  # the second chunk is never sent
