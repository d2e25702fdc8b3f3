"""Every config key the loader accepts is documented in README.md's "Configuration"
section, under its own table.

The accepted keys are not listed here: they are what the loader itself passes to
`Reader.unknown_keys`. The README's TOML examples are run through the real loader with
that method recorded, which yields each table's allowed set together with the path the
example gave it (`server`, `issuers[2]`, `profiles.support.limits`); the keys the README
writes under that table's header (`key = ...`, commented out or not) must cover the set.
A table the examples never reach (found by reading the config package's source for
every `unknown_keys(` call) fails too: its keys would otherwise go unchecked.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import piigate.config
from piigate.config import ConfigError, parse_config
from piigate.config.reader import Reader

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIG_PACKAGE = Path(piigate.config.__file__).resolve().parent
HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=")


@dataclass(frozen=True)
class Site:
    """One `unknown_keys(...)` call in the loader's source."""

    file: Path
    first_line: int
    last_line: int

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.first_line}"


@dataclass(frozen=True)
class Visit:
    """One call the loader made: which site, for which table path, allowing what."""

    site: Site
    block: int  # which README example
    path: str
    allowed: frozenset[str]


def configuration_section() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1]
    return section.split("\n## ", 1)[0]


def toml_blocks() -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", configuration_section(), re.M | re.S)


def call_sites() -> list[Site]:
    sites = []
    for file in sorted(CONFIG_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "unknown_keys"):
                sites.append(Site(file, node.lineno, node.end_lineno or node.lineno))
    return sites


def site_of(frame_file: str, line: int, sites: list[Site]) -> Site:
    for site in sites:
        if Path(frame_file).resolve() == site.file and site.first_line <= line <= site.last_line:
            return site
    raise AssertionError(f"unknown_keys called from {frame_file}:{line}, outside the config "
                         "package: put the table's reading in piigate.config")


def walk(blocks: list[str], sites: list[Site], tmp: Path) -> tuple[list[Visit], list[str]]:
    """Run each README example through the loader; the visits and its unknown keys."""
    visits: list[Visit] = []
    current = [0]  # the example being walked
    original = Reader.unknown_keys

    def recording(self: Reader, data: Mapping[str, Any], allowed: Collection[str],
                  path: str) -> None:
        caller = sys._getframe(1)
        site = site_of(caller.f_code.co_filename, caller.f_lineno, sites)
        visits.append(Visit(site, current[0], path, frozenset(allowed)))
        original(self, data, allowed, path)

    unknown: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Reader, "unknown_keys", recording)
        for index, text in enumerate(blocks):
            current[0] = index
            try:
                parse_config(tomllib.loads(text), {}, tmp)
            except ConfigError as exc:  # examples are partial: only the walk matters
                unknown += [p for p in exc.problems if ": unknown key" in p]
    return visits, unknown


def headers(text: str) -> Iterator[tuple[str, list[str]]]:
    """(table path as the loader names it, the lines under its header) of one example;
    the lines before the first header belong to the path ""."""
    path, lines = "", []
    arrays: dict[str, int] = defaultdict(int)
    for line in text.splitlines():
        match = HEADER.match(line)
        if match is None:
            lines.append(line)
            continue
        yield path, lines
        name = match.group(2)
        if match.group(1) == "[[":
            path = f"{name}[{arrays[name]}]"
            arrays[name] += 1
        else:
            path = name
        lines = [line[match.end():]]  # a comment after the header may name keys too
    yield path, lines


def documented(text: str, path: str) -> set[str]:
    """Keys the example writes under the table at `path`: `key = ...` lines, and the
    sub-tables it gives a header of their own (`[profiles.support.limits]` documents
    `limits` of `profiles.support`; `[server]` documents `server` at the top level)."""
    tables = dict(headers(text))
    prefix = f"{path}." if path else ""
    subtables = {re.sub(r"\[\d+\]$", "", p.removeprefix(prefix).split(".")[0])
                 for p in tables if p and p.startswith(prefix) and p != path}
    return subtables | set(KEY.findall("\n".join(tables.get(path, []))))


def undocumented(visits: list[Visit], blocks: list[str]) -> list[str]:
    """Per loader table: the accepted keys no example writes under it."""
    allowed: dict[Site, set[str]] = defaultdict(set)
    written: dict[Site, set[str]] = defaultdict(set)
    tables: dict[Site, set[str]] = defaultdict(set)
    for visit in visits:
        allowed[visit.site] |= visit.allowed
        written[visit.site] |= documented(blocks[visit.block], visit.path)
        tables[visit.site].add(re.sub(r"\d+", "N", visit.path) or "(top level)")
    return [
        f"{' / '.join(sorted(tables[site]))}: {', '.join(sorted(allowed[site] - written[site]))}"
        for site in allowed if allowed[site] - written[site]
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Visit], list[str]]:
    return walk(toml_blocks(), call_sites(), tmp_path_factory.mktemp("readme"))


def test_the_walk_finds_the_loader_and_the_readme() -> None:
    assert len(toml_blocks()) >= 3
    sites = {str(s) for s in call_sites()}
    assert any("load.py" in s for s in sites)
    assert any("issuers.py" in s for s in sites)


def test_every_table_the_loader_reads_is_reached_by_a_readme_example(
    reference: tuple[list[Visit], list[str]],
) -> None:
    reached = {visit.site for visit in reference[0]}
    missing = [str(site) for site in call_sites() if site not in reached]
    assert not missing, ("no example in README's Configuration section reaches the table "
                         f"read at {', '.join(missing)}: add one that shows its keys")


def test_every_accepted_key_is_documented_under_its_table(
    reference: tuple[list[Visit], list[str]],
) -> None:
    missing = undocumented(reference[0], toml_blocks())
    assert not missing, ("keys the loader accepts but README's Configuration section never "
                         "writes under their table:\n  " + "\n  ".join(missing))


def test_the_readme_examples_use_no_key_the_loader_refuses(
    reference: tuple[list[Visit], list[str]],
) -> None:
    assert reference[1] == []


def test_a_key_missing_from_the_readme_is_caught(tmp_path: Path) -> None:
    """The check can fail: the main example without its `max_batch_size` line, or with
    the key moved under another table, leaves it undocumented."""
    main = toml_blocks()[0]
    assert re.search(r"(?m)^max_batch_size = ", main)
    dropped = re.sub(r"(?m)^max_batch_size = .*\n", "", main)
    moved = dropped.replace("[vault]", "[vault]\n# max_batch_size = 100", 1)
    for text in (dropped, moved):
        visits, _ = walk([text], call_sites(), tmp_path)
        assert any(line.startswith("server: ") and "max_batch_size" in line
                   for line in undocumented(visits, [text]))
