"""The command line, the environment and the files it names, read once into `Options`.

Secrets never come from a flag's value, which would land in shell history and in every
process listing: the agent's access token is read from `--agent-token-file` or the
`PIIGATE_AGENT_TOKEN` variable, the service's client secret from `--client-secret-file`
or `PIIGATE_CLIENT_SECRET`. A flag beats its variable. Complaints name the flag or the
file, never a value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from piigate_client import chunking
from piigate_client.support import customers as customer_input
from piigate_client.support.customers import Customer, InputError
from piigate_client.support.output import FORMATS, Format
from piigate_client.support.retry import RetryPolicy
from piigate_client.wire import REASON_NUMBERS

# The gateway's defaults for `server.max_batch_size` and `server.max_request_bytes`.
DEFAULT_MAX_BATCH_SIZE = chunking.DEFAULT_MAX_BATCH_SIZE
DEFAULT_MAX_MESSAGE_BYTES = chunking.DEFAULT_MAX_REQUEST_BYTES
MAX_SECRET_FILE_BYTES = 64 * 1024
MAX_PURPOSE_CHARS = 128  # DetokenizeRequest.purpose's documented bound
EXIT_STATUS = ("Exit status: 0 every customer found; 1 some customers not found or refused "
               "(each row says why); 2 usage or configuration error, nothing sent; 3 the call "
               "was refused or piigate was unavailable.")
ENV = {
    "target": "PIIGATE_TARGET",
    "token_url": "PIIGATE_TOKEN_URL",
    "client_id": "PIIGATE_CLIENT_ID",
    "client_secret": "PIIGATE_CLIENT_SECRET",
    "caller_audience": "PIIGATE_CALLER_AUDIENCE",
    "agent_token": "PIIGATE_AGENT_TOKEN",
    "tls_ca": "PIIGATE_TLS_CA",
    "tls_cert": "PIIGATE_TLS_CERT",
    "tls_key": "PIIGATE_TLS_KEY",
}


class UsageError(ValueError):
    """The command line or its configuration cannot work (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Tls:
    """Server verification (`ca`, else the system's roots) and, for a caller known by
    its certificate, the client's own certificate chain and key (PEM bytes)."""

    ca: bytes | None = field(default=None, repr=False)
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CallerCredential:
    """The support service's client-credentials grant: a secret, or a private key for
    `private_key_jwt` (RFC 7523)."""

    token_url: str
    client_id: str
    audience: str
    scope: str | None
    secret: str | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    key_algorithm: str = "RS256"
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """Everything one `piigate-support lookup` run needs, validated."""

    target: str
    customers: tuple[Customer, ...]
    batch: bool  # the customers came from a list (CSV or lines), not from --subject
    agent_token: str = field(repr=False)
    ticket: str
    fields: tuple[str, ...]
    reason: str | None
    adhoc_reason: str
    output: Format | None  # None: table on a terminal, JSON lines elsewhere
    progress: bool
    tls: Tls | None  # None: plaintext (--plaintext)
    caller: CallerCredential | None  # None: known by its client certificate alone
    timeout_s: float
    max_batch_size: int
    max_message_bytes: int
    retry: RetryPolicy


def parser() -> argparse.ArgumentParser:
    """The argument parser (`piigate-support --help`)."""
    top = argparse.ArgumentParser(
        prog="piigate-support",
        description="Look customers' data up through piigate, as a support agent, for a "
        "ticket. Prints only what the support profile discloses.",
        epilog=EXIT_STATUS,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lookup = commands.add_parser(
        "lookup", help="look one or many customers up",
        description="Look one customer (--issuer, --subject) or many (--csv, --stdin) up.",
        epilog=EXIT_STATUS,
    )
    who = lookup.add_argument_group("customers")
    who.add_argument("--issuer", help="piigate's configured issuer name for --subject, "
                     "or for every --stdin line")
    who.add_argument("--subject", help="the customer's subject (`sub`) at --issuer")
    who.add_argument("--csv", metavar="FILE", help="a CSV with issuer and subject columns "
                     "('-': standard input)")
    who.add_argument("--stdin", action="store_true",
                     help="one subject per line on standard input, all at --issuer")
    what = lookup.add_argument_group("what and why")
    what.add_argument("--fields", action="append", default=[], metavar="NAME[,NAME]",
                      help="fields wanted (default: every field the profile allows)")
    what.add_argument("--reason", choices=sorted(REASON_NUMBERS), metavar="REASON",
                      help="the vault access reason, one of "
                      f"{', '.join(sorted(REASON_NUMBERS))} (default: the profile's)")
    what.add_argument("--adhoc-reason", default="", help="free text, with --reason Other")
    what.add_argument("--ticket", required=True,
                      help="the support ticket this lookup is for (sent as the purpose)")
    out = lookup.add_argument_group("output")
    out.add_argument("--output", choices=FORMATS,
                     help="default: table on a terminal, jsonl otherwise")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    gateway = lookup.add_argument_group("gateway")
    gateway.add_argument("--target", help=f"host:port of piigate (${ENV['target']})")
    gateway.add_argument("--plaintext", action="store_true",
                         help="no TLS: for a gateway on loopback in development only")
    gateway.add_argument("--tls-ca", metavar="PEM", help=f"CA bundle (${ENV['tls_ca']}; "
                         "default: the system's roots)")
    gateway.add_argument("--tls-cert", metavar="PEM",
                         help=f"client certificate for mutual TLS (${ENV['tls_cert']})")
    gateway.add_argument("--tls-key", metavar="PEM",
                         help=f"its private key (${ENV['tls_key']})")
    gateway.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                         help="deadline of each call (default 10)")
    caller = lookup.add_argument_group("the support service's credential")
    caller.add_argument("--token-url", help=f"token endpoint (${ENV['token_url']})")
    caller.add_argument("--client-id", help=f"client id (${ENV['client_id']})")
    caller.add_argument("--client-secret-file", metavar="FILE",
                        help=f"file holding the client secret (or ${ENV['client_secret']})")
    caller.add_argument("--client-key-file", metavar="PEM",
                        help="private key for private_key_jwt instead of a secret "
                        "(needs piigate-client[jwt])")
    caller.add_argument("--client-key-alg", default="RS256",
                        choices=("RS256", "RS384", "ES256", "ES384"))
    caller.add_argument("--client-key-id", help="the key's kid")
    caller.add_argument("--caller-audience",
                        help=f"audience of the caller token (${ENV['caller_audience']}; "
                        "default piigate)")
    caller.add_argument("--scope", help="scope of the caller token")
    agent = lookup.add_argument_group("the agent")
    agent.add_argument("--agent-token-file", metavar="FILE",
                       help=f"file holding your own access token (or ${ENV['agent_token']})")
    tuning = lookup.add_argument_group("batches and retries")
    tuning.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help="customers per call, at most the gateway's max_batch_size")
    tuning.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                        help="request size per call, at most the gateway's "
                        "max_request_bytes")
    tuning.add_argument("--max-attempts", type=int, default=3,
                        help="calls per customer, the first included")
    tuning.add_argument("--max-retry-wait", type=float, default=30.0, metavar="SECONDS",
                        help="longest RetryInfo delay to wait for")
    return top


def load(argv: Sequence[str] | None, environ: Mapping[str, str],
         stdin: TextIO = sys.stdin) -> Options:
    """Parse `argv` (argparse exits 2 itself on a malformed line); raise `UsageError`."""
    args = parser().parse_args(argv)
    env = {key: (environ.get(name) or "").strip() or None for key, name in ENV.items()}
    target = args.target or env["target"]
    if not target:
        raise UsageError(f"no gateway: pass --target or set {ENV['target']}")
    customers, batch = _customers(args, stdin)
    if args.adhoc_reason and args.reason != "Other":
        raise UsageError("--adhoc-reason goes with --reason Other only")
    if args.reason == "Other" and not args.adhoc_reason:
        raise UsageError("--reason Other needs --adhoc-reason")
    ticket = args.ticket.strip()
    if not ticket or len(ticket) > MAX_PURPOSE_CHARS or not ticket.isprintable():
        raise UsageError(f"--ticket must be 1 to {MAX_PURPOSE_CHARS} printable characters")
    agent_token = (_secret_file(args.agent_token_file, "--agent-token-file")
                   if args.agent_token_file else env["agent_token"])
    if not agent_token:
        raise UsageError("no agent token: pass --agent-token-file or set "
                         f"{ENV['agent_token']} (never as a flag value)")
    tls = _tls(args, env)
    caller = _caller(args, env)
    if caller is None and (tls is None or tls.cert is None):
        raise UsageError("no caller credential: pass --token-url and --client-id (with a "
                         "secret or key), or --tls-cert and --tls-key for mutual TLS")
    for name, value in (("--max-batch-size", args.max_batch_size),
                        ("--max-message-bytes", args.max_message_bytes),
                        ("--max-attempts", args.max_attempts)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1")
    if not args.timeout > 0 or args.max_retry_wait < 0:
        raise UsageError("--timeout must be positive and --max-retry-wait not negative")
    return Options(
        target=target, customers=tuple(customers), batch=batch, agent_token=agent_token,
        ticket=ticket, fields=_fields(args.fields), reason=args.reason,
        adhoc_reason=args.adhoc_reason, output=args.output, progress=not args.no_progress,
        tls=tls, caller=caller, timeout_s=args.timeout, max_batch_size=args.max_batch_size,
        max_message_bytes=args.max_message_bytes,
        retry=RetryPolicy(max_attempts=args.max_attempts, max_wait_s=args.max_retry_wait),
    )


def _customers(args: argparse.Namespace, stdin: TextIO) -> tuple[list[Customer], bool]:
    sources = [bool(args.subject), bool(args.csv), bool(args.stdin)]
    if sum(sources) != 1:
        raise UsageError("name the customers one way: --subject, --csv or --stdin")
    if (args.subject or args.stdin) and not args.issuer:
        raise UsageError("--subject and --stdin need --issuer")
    if args.csv and args.issuer:
        raise UsageError("--csv names each row's issuer: drop --issuer")
    try:
        if args.subject:
            return [customer_input.one(args.issuer, args.subject)], False
        if args.stdin:
            return customer_input.from_lines(stdin, args.issuer), True
        text = stdin.read() if args.csv == "-" else _text_file(args.csv, "--csv")
        return customer_input.from_csv(text), True
    except InputError as exc:
        raise UsageError(f"customers: {exc}") from None


def _fields(values: Sequence[str]) -> tuple[str, ...]:
    names = [name.strip() for value in values for name in value.split(",")]
    if any(not name for name in names):
        raise UsageError("--fields has an empty name")
    return tuple(dict.fromkeys(names))


def _tls(args: argparse.Namespace, env: Mapping[str, str | None]) -> Tls | None:
    paths = {"ca": args.tls_ca or env["tls_ca"], "cert": args.tls_cert or env["tls_cert"],
             "key": args.tls_key or env["tls_key"]}
    if args.plaintext:
        if any(paths.values()):
            raise UsageError("--plaintext and TLS files do not go together")
        return None
    if bool(paths["cert"]) != bool(paths["key"]):
        raise UsageError("--tls-cert and --tls-key go together")
    loaded = {k: _bytes_file(v, f"--tls-{k}") if v else None for k, v in paths.items()}
    return Tls(loaded["ca"], loaded["cert"], loaded["key"])


def _caller(args: argparse.Namespace, env: Mapping[str, str | None]) -> CallerCredential | None:
    token_url, client_id = args.token_url or env["token_url"], args.client_id or env["client_id"]
    if not token_url and not client_id:
        return None
    if not token_url or not client_id:
        raise UsageError("--token-url and --client-id go together")
    secret = (_secret_file(args.client_secret_file, "--client-secret-file")
              if args.client_secret_file else env["client_secret"])
    key = _bytes_file(args.client_key_file, "--client-key-file") if args.client_key_file else None
    if (secret is None) == (key is None):
        raise UsageError("the caller needs a client secret (--client-secret-file or "
                         f"{ENV['client_secret']}) or --client-key-file: exactly one")
    return CallerCredential(
        token_url=token_url, client_id=client_id,
        audience=args.caller_audience or env["caller_audience"] or "piigate",
        scope=args.scope, secret=secret, private_key=key, key_algorithm=args.client_key_alg,
        key_id=args.client_key_id,
    )


def _bytes_file(path: str, flag: str) -> bytes:
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path} ({exc.strerror})") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise UsageError(f"{flag}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    return data


def _secret_file(path: str, flag: str) -> str:
    try:
        secret = _bytes_file(path, flag).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"{flag}: {path} is not UTF-8 text") from None
    if not secret:
        raise UsageError(f"{flag}: {path} is empty")
    return secret


def _text_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is fine
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag}: {path} is not UTF-8 text") from None
