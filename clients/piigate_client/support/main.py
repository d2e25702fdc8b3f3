"""`piigate-support`: the composition root and the exit status.

Exit status (also in `--help` and the README):

    0  every customer was found
    1  some customers got no data (not found; the agent refused for them, e.g.
       ACTOR_PERMISSION_MISSING; a cap): each row says why
    2  usage or configuration error: nothing was sent
    3  the call itself was refused or could not be made (the console's own credential
       refused, by piigate or at the token endpoint; piigate unavailable past the
       retries): the rows not answered carry that failure
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

import grpc

from piigate_client.oauth import ClientCredentials
from piigate_client.support import output, progress
from piigate_client.support.gateway import GrpcGateway, PlanError, Query, chunk_plan
from piigate_client.support.lookup import Failed, Failure, Report, run
from piigate_client.support.options import CallerCredential, Options, UsageError, load

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_CALL_FAILED = 3
PROG = "piigate-support"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    return run_command(argv, os.environ, sys.stdin, sys.stdout, sys.stderr)


def run_command(
    argv: Sequence[str] | None, environ: Mapping[str, str],
    stdin: TextIO, stdout: TextIO, stderr: TextIO,
) -> int:
    """`main` with its streams and environment passed in."""
    try:
        options = load(argv, environ, stdin)
        fmt: output.Format = options.output or ("table" if _isatty(stdout) else "jsonl")
        _require_rich(fmt, options, stderr)
        caller = _caller_credential(options.caller)
        channel = _channel_credentials(options)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return EXIT_USAGE
    query = Query(agent_token=options.agent_token, purpose=options.ticket,
                  fields=options.fields, reason=options.reason,
                  adhoc_reason=options.adhoc_reason)
    show_bar = options.progress and progress.wanted(stderr, options.batch)
    plan = chunk_plan(query, options.max_message_bytes)
    try:
        plan(options.customers, options.max_batch_size)  # fails before any call, or never
    except PlanError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return EXIT_USAGE
    with GrpcGateway(options.target, query, caller, channel, options.timeout_s) as gateway, \
            progress.progress_bar(len(options.customers), stderr, show_bar) as advance:
        report = run(options.customers, gateway, plan, max_items=options.max_batch_size,
                     policy=options.retry, sleep=time.sleep, advance=advance)
    output.write(report.outcomes, fmt, options.fields, stdout)
    stdout.flush()
    return _finish(report, stderr)


def _finish(report: Report, stderr: TextIO) -> int:
    if report.call_failure is not None:
        print(f"{PROG}: the call failed: {_describe(report.call_failure)}", file=stderr)
        return EXIT_CALL_FAILED
    print(f"{PROG}: {output.summary(report.outcomes)}", file=stderr)
    return EXIT_SOME_FAILED if any(isinstance(o, Failed) for o in report.outcomes) else EXIT_OK


def _describe(failure: Failure) -> str:
    """Reason and request id: enough to find the audit event, nothing else."""
    text = f"{failure.code} {failure.reason}"
    if failure.request_id:
        text += f" (request id {failure.request_id})"
    if failure.retry_after_s is not None:
        text += f"; retry after {failure.retry_after_s:.0f} s"
    return text


def _caller_credential(caller: CallerCredential | None) -> ClientCredentials | None:
    if caller is None:
        return None
    try:
        if caller.private_key is not None:
            from piigate_client.client_auth import PrivateKeyJwt

            auth: str | PrivateKeyJwt = PrivateKeyJwt(
                caller.private_key, algorithm=caller.key_algorithm, key_id=caller.key_id)
        else:
            assert caller.secret is not None  # options.load insists on exactly one
            auth = caller.secret
        return ClientCredentials(caller.token_url, caller.client_id, auth,
                                 audience=caller.audience, scope=caller.scope)
    except (ValueError, ImportError) as exc:
        raise UsageError(f"caller credential: {exc}") from None


def _channel_credentials(options: Options) -> grpc.ChannelCredentials | None:
    if options.tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=options.tls.ca, private_key=options.tls.key,
        certificate_chain=options.tls.cert,
    )


def _require_rich(fmt: output.Format, options: Options, stderr: TextIO) -> None:
    if fmt != "table" and not (options.progress and progress.wanted(stderr, options.batch)):
        return
    try:
        import rich  # noqa: F401
    except ImportError:
        raise UsageError("the table and the progress bar need rich: install "
                         "'piigate-client[support]', or pass --output jsonl --no-progress"
                         ) from None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
