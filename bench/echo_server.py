"""The ceiling: a bare grpc.aio server answering every Detokenize with a canned response.

    python -m bench.echo_server --listen 127.0.0.1:0 [--loop asyncio|uvloop]

Same proto and the same generated servicer base as piigate, so it pays exactly the gRPC
framework's cost per call (parse the request, build the response, HTTP/2) and nothing
else. Run it on the event loop piigate runs on: a loop change moves both.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from bench import serving
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

# Shaped like piigate's answer for the support profile (three fields, one redacted).
CANNED = pb.DetokenizeResponse(
    token_id="0b6f3f0e-6f57-4c62-9a55-3f1f1c0c9d1e",
    profile="support",
    reason=pb.REASON_ACCOUNT_MANAGEMENT,
    fields=[
        pb.DisclosedField(name="ssn", value="***-**-1234", disclosure=pb.DISCLOSURE_MASKED),
        pb.DisclosedField(name="email", value="u***@example.test", disclosure=pb.DISCLOSURE_MASKED),
        pb.DisclosedField(name="user_id", value="", disclosure=pb.DISCLOSURE_REDACTED),
    ],
)


class EchoService(pb_grpc.DetokenizationServiceServicer):
    """Answers without looking at the request or the metadata."""

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetokenizeResponse:
        return CANNED


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    # Only Detokenize is measured; the generated base answers UNIMPLEMENTED for the rest.
    pb_grpc.add_DetokenizationServiceServicer_to_server(EchoService(), server)  # type: ignore[abstract]
    await serving.serve_until_signalled(server, listen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--loop", choices=serving.LOOPS, default="asyncio")
    args = parser.parse_args()
    serving.run(serve(args.listen), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
