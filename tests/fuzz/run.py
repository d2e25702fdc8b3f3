"""Fuzz one target: `python -m tests.fuzz.run TARGET [--known-ok] [--workdir DIR] [LIBFUZZER...]`.

With no corpus directory or input file among the arguments, the run starts from the
checked-in seeds (`corpus/TARGET/`, read only) plus the target's run-time seeds, and
libFuzzer adds what it finds to a working corpus in the work directory (`--workdir`, a
new temporary one by default, printed at start). Given files, libFuzzer runs each once:
that is how a crash file is replayed. Every other argument is libFuzzer's
(`-runs=N`, `-seed=N`, `-max_total_time=S`, `-artifact_prefix=DIR/`, ...).

Exit status: 0 when nothing was found, non-zero (libFuzzer's) on a finding, whose input
is written to `<artifact_prefix>crash-<sha1>`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import atheris

from tests.fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent
# Modules whose branches guide the fuzzer. Only what a target imports is instrumented.
INSTRUMENTED = ["piigate", "piigate_dev", "tomllib"]
# Defaults a caller's own flag replaces: a slow input is a finding well before
# libFuzzer's own 20 minutes.
DEFAULT_FLAGS = {"-timeout": "10", "-rss_limit_mb": "2048"}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [--known-ok] "
                 "[--workdir DIR] [libFuzzer flags] [corpus dirs or files]")
    name, rest = argv[0], argv[1:]
    known_ok = "--known-ok" in rest
    rest = [a for a in rest if a != "--known-ok"]
    workdir = None
    if "--workdir" in rest:
        at = rest.index("--workdir")
        workdir = Path(rest[at + 1])
        del rest[at : at + 2]
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"piigate-fuzz-{name}-"))
    logging.disable(logging.CRITICAL)  # parsers log what they refuse; millions of times here
    with atheris.instrument_imports(include=INSTRUMENTED):
        target = importlib.import_module(f"tests.fuzz.targets.{name}")
    if hasattr(target, "setup"):
        target.setup(workdir)
    flags = [a for a in rest if a.startswith("-")]
    inputs = [a for a in rest if not a.startswith("-")]
    given = {flag.split("=", 1)[0] for flag in flags}
    flags += [f"{flag}={value}" for flag, value in DEFAULT_FLAGS.items() if flag not in given]
    if not inputs:
        inputs = [str(_working_corpus(target, workdir)), str(HERE / "corpus" / name)]
        print(f"fuzz {name}: working corpus in {inputs[0]}", file=sys.stderr)
    atheris.Setup([sys.argv[0], *flags, *inputs], _one_input(target, known_ok))
    atheris.Fuzz()


def _working_corpus(target: ModuleType, workdir: Path) -> Path:
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(getattr(target, "seeds", list)()):
        (corpus / f"runtime-{index}").write_bytes(seed)
    return corpus


def _one_input(target: ModuleType, known_ok: bool) -> Callable[[bytes], None]:
    fuzz: Callable[[bytes], None] = target.fuzz
    known: tuple[type[BaseException], ...] = getattr(target, "KNOWN", ()) if known_ok else ()
    if not known:
        return fuzz

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*known):  # already known, being fixed in the parser's file
            fuzz(data)

    return one_input


if __name__ == "__main__":
    main(sys.argv[1:])
