"""Control and system endpoints: health, version, collections.

Health answers without a key (it is what load balancers and `wait-for` scripts poll);
collections need a key, and a key sees only the collections its policies name.
"""

from __future__ import annotations

from aiohttp import web

from piigate.vault.piiano import API_BASE
from piigate_dev.localvault.boundary import answer, read_json, vault_and_caller
from piigate_dev.localvault.database import SCHEMA_VERSION
from piigate_dev.localvault.errors import NotPermitted, RequestInvalid
from piigate_dev.localvault.schema import parse_collection

BASE = API_BASE
VERSION = "1.13.0-piigate-local"


async def health(request: web.Request) -> web.Response:
    """`{"status": "pass"}`: the vault is serving."""
    return answer({"status": "pass"})


async def version(request: web.Request) -> web.Response:
    """The version triple Piiano answers (identifying this as the local stand-in)."""
    return answer(
        {"vault_id": "piigate-local", "vault_version": VERSION, "db_schema_version": SCHEMA_VERSION}
    )


async def list_collections(request: web.Request) -> web.Response:
    """Every collection this key can see."""
    vault, key = vault_and_caller(request)
    visible = [spec.to_json() for spec in vault.store.collections() if key.can_see(spec.name)]
    return answer(visible)


async def get_collection(request: web.Request) -> web.Response:
    """One collection (404 PV1004 when missing or not visible to this key)."""
    vault, key = vault_and_caller(request)
    return answer(vault.collection(key, request.match_info["collection"]).to_json())


async def create_collection(request: web.Request) -> web.Response:
    """Create a collection from a Piiano-shaped body; needs `write` on all its properties."""
    vault, key = vault_and_caller(request)
    spec, problems = parse_collection(await read_json(request))
    if spec is None:
        path, problem = problems[0]
        raise RequestInvalid(field=path, problem=problem)
    denial = key.denial("write", spec.name, ("*",), None)
    if denial is not None:
        raise NotPermitted(**denial)
    vault.store.create_collection(spec)
    return answer(spec.to_json())


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the control and system endpoints."""
    router.add_get(f"{BASE}/data/info/health", health)
    router.add_get(f"{BASE}/ctl/info/health", health)
    router.add_get(f"{BASE}/system/info/version", version)
    router.add_get(f"{BASE}/ctl/collections", list_collections)
    router.add_post(f"{BASE}/ctl/collections", create_collection)
    router.add_get(f"{BASE}/ctl/collections/{{collection}}", get_collection)
