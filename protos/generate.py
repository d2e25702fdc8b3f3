"""Generate the Python stubs for protos/ into clients/piigate_client/v1/ (the one place
generated code lives), or with --check fail if the committed stubs drift from the protos.

protoc names Python modules after the proto path (piigate/v1/...), which would collide
with the server package `piigate`; the stubs are therefore re-rooted under
`piigate_client.v1` by rewriting the generated import lines, and nothing else.

Runs only under the generator pinned as piigate-client's `gen` extra (`make gen` keeps it
in .tools/gen): the generator's version is written into the stubs and sets the oldest
protobuf and grpcio they accept, and --check compares byte for byte.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import io
import re
import shutil
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
TARGET = ROOT / "clients" / "piigate_client" / "v1"
CLIENT_PROJECT = ROOT / "clients" / "pyproject.toml"
BIN = Path(sys.executable).parent
# Import statements only: the descriptor and service names keep the proto package `piigate.v1`.
IMPORT_LINE = re.compile(r"^(from|import) piigate\.v1\b", re.MULTILINE)
# Type stubs also name the module in annotations (`piigate.v1.detokenization_pb2.X`).
STUB_REFERENCE = re.compile(r"\bpiigate\.v1\.(\w+_pb2)\b")


def _check_generator() -> None:
    """Refuse any generator but the pinned one, before importing it: another version
    writes other version checks into the stubs."""
    pins = tomllib.loads(CLIENT_PROJECT.read_text())["project"]["optional-dependencies"]["gen"]
    for pin in pins:
        name, _, wanted = pin.partition("==")
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = "nothing"
        if found != wanted:
            raise SystemExit(
                f"{name}=={wanted} (piigate-client's `gen` extra) generates the stubs, but "
                f"{sys.executable} has {found}: run `make gen` or `make gen-check`"
            )


def _generate(into: Path) -> None:
    # Imported here, once _check_generator has vouched for its version.
    from grpc_tools import protoc  # type: ignore[import-untyped]

    well_known = Path(protoc.__file__).parent / "_proto"
    # Our own protos only: google/rpc/status.proto is there for buf to resolve the import;
    # its Python module comes from googleapis-common-protos.
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "piigate").rglob("*.proto")
    )
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",  # google/protobuf/*.proto, shipped with grpcio-tools
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={into}",
        f"--mypy_out=quiet:{into}",
        f"--grpc_python_out={into}",
        f"--mypy_grpc_out=quiet:{into}",
        *protos,
    ]
    with contextlib.redirect_stderr(io.StringIO()):  # the mypy plugins chatter on stderr
        status = protoc.main(args)
    if status != 0:
        raise SystemExit("protoc failed")
    generated = into / "piigate" / "v1"
    for path in generated.iterdir():
        text = IMPORT_LINE.sub(r"\1 piigate_client.v1", path.read_text())
        if path.suffix == ".pyi":
            text = STUB_REFERENCE.sub(r"piigate_client.v1.\1", text)
        path.write_text(text)
    (generated / "__init__.py").write_text(
        '"""Generated from protos/piigate/v1 by protos/generate.py."""\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs drift")
    args = parser.parse_args()
    _check_generator()
    with tempfile.TemporaryDirectory() as tmp:
        _generate(Path(tmp))
        fresh = Path(tmp) / "piigate" / "v1"
        if args.check:
            names = sorted(p.name for p in fresh.iterdir())
            existing = sorted(p.name for p in TARGET.iterdir()) if TARGET.is_dir() else []
            existing = [n for n in existing if n != "__pycache__"]
            _, mismatch, errors = filecmp.cmpfiles(fresh, TARGET, names, shallow=False)
            differing = set(mismatch) | set(errors) | (set(names) ^ set(existing))
            if differing:
                print(
                    "generated stubs drift from protos/: run `make gen` and commit "
                    f"(differing: {sorted(differing)})",
                    file=sys.stderr,
                )
                return 1
            print("generated stubs match protos/")
            return 0
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(fresh, TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
