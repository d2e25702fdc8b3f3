"""Test helper: every sample name a gateway exports, read from the registry the gateway's
own composition root builds (`piigate.bootstrap.build_parts`), for the tests that check
the dashboard and the alert rules name only real series; and a small PromQL reader that
finds the metric names in an expression.

The config has a shared (redis) store and a file audit trail, so every family that exists
only with one of them is there too. Nothing is started: the store's pool connects lazily
and the parts are closed at once.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import tomllib
from pathlib import Path

from piigate.audit.sink import ChainedJsonLinesSink
from piigate.bootstrap import build_parts
from piigate.config import parse_config
from piigate_dev import demo

# Sample names a family of each type exports in the text format.
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
             "gauge": ("",), "info": ("_info",), "summary": ("", "_count", "_sum")}


def exported_sample_names(tmp_path: Path) -> set[str]:
    """The sample names of a gateway's registry (labelled families included before their
    first observation: names come from the families, not from samples seen)."""
    return asyncio.run(_names(tmp_path))


async def _names(tmp_path: Path) -> set[str]:
    data = tomllib.loads(demo.gateway_config("http://127.0.0.1:1/", "http://127.0.0.1:2",
                                             tmp_path / "audit.jsonl"))
    data["state"] = {"backend": "redis", "url": "redis://127.0.0.1:1/0",
                     "subject_key_env": "SUBJECT_KEY"}
    environ = {"PIIGATE_DEMO_VAULT_KEY_FHIR": "k1", "PIIGATE_DEMO_VAULT_KEY_SUPPORT": "k2",
               "SUBJECT_KEY": secrets.token_hex(32)}
    config = parse_config(data, environ, tmp_path)
    sink = ChainedJsonLinesSink.open(tmp_path / "audit.jsonl", fsync=True)
    parts = build_parts(config, audit=sink)
    try:
        families = list(parts.metrics.registry.collect())
    finally:
        await parts.aclose()
    return {f.name + suffix for f in families for suffix in _SUFFIXES[f.type]}


# --- PromQL -------------------------------------------------------------------------------
# Words of the language that look like metric names (operators, modifiers, literals).
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan", "atan2", "start", "end"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers that are not functions (followed by
    `(`), keywords, label names (inside `{}` or a grouping list) or durations."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    return {m.group(1) for m in _IDENTIFIER.finditer(text)
            if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}


def without_grafana_variables(expr: str) -> str:
    """`expr` with Grafana's variables replaced by what Prometheus accepts."""
    for variable, value in (("$__rate_interval", "5m"), ("$__interval", "1m"),
                            ("$__range", "1h")):
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", "x", expr)  # template variables: in label values
