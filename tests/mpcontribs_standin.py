"""Local stand-in for the subset of the MPContribs REST API used by ``mpcontribs-client``.

Checked against ``mpcontribs-client`` **5.10.5** (bravado 12.0.1, bravado-core 6.4.1,
swagger-spec-validator 3.0.4, pint 0.25).  The route layout, operation ids, parameter
names, limits and default fields mirror the real server (materialsproject/MPContribs,
``mpcontribs-api``: ``core.get_specs`` + the ``*Resource`` classes); storage is an
in-memory dict guarded by a lock.  Pure standard library HTTP
(``http.server.ThreadingHTTPServer`` in a daemon thread, bound to 127.0.0.1).

Usage::

    from tests.mpcontribs_standin import StandIn
    with StandIn(project="aimmat-demo") as server:
        client = server.client()   # == Client(apikey="x"*32, host=server.host, project=...)
        client.submit_contributions([...])
        server.contributions       # stored docs, components resolved to full dicts
        server.upload_count        # POST/PUT requests to /contributions/...
        server.fail_next(identifier="mp-2", status=500, times=None)

How the client is pointed at the stand-in
-----------------------------------------
* ``Client.__init__`` picks ``https`` only for ``*.materialsproject.org`` hosts, so any
  other ``host`` ("127.0.0.1:PORT", "localhost:PORT") is spoken to over plain http.
* But it also requires ``f"http://{host}"`` to be in ``mpcontribs.client.VALID_URLS``
  (``http://localhost:{5000,5002,5003,5005,10000,10002,10003,10005,20000,20005}``, some
  192.168.0.x and docker host names) and raises ``MPContribsClientError`` otherwise.
  Default here: bind an ephemeral port and *add* ``http://127.0.0.1:PORT`` to that module
  level set while the server runs (removed again on stop).  ``StandIn(whitelisted_port=True)``
  instead binds the first free whitelisted port and uses ``host="localhost:PORT"``: no
  patching at all.  ``server.host`` is the value to pass as ``Client(host=...)``.
* ``apikey`` may be any string when passed explicitly (the 32-character check only runs
  for keys read from the environment); it is sent as ``x-api-key``.  The stand-in ignores
  it unless ``StandIn(apikey=...)`` is given, then a wrong/missing key gets 401.

Spec loading / cache pollution
------------------------------
``_version(url)`` returns the client's own ``__version__`` when ``pytest`` is imported
and the url is http; otherwise it GETs ``/healthcheck`` and uses ``{"version": ...}``
(here a unique ``standin-<hex>`` per instance).  ``_raw_specs`` then GETs
``/apispec.json`` once and caches it on disk as
``gettempdir()/urlsafe_b64encode(b"http://HOST/apispec-VERSION.json")``; ``_load``,
``_raw_specs``, ``_version`` and ``_expand_params`` are also memoised in-process.
``StandIn.start()`` and ``stop()`` delete the on-disk cache files for both candidate
versions and clear the four in-process caches (``reset_client_caches()``), so a
stale spec from an earlier server on the same host:port can never be picked up.

Implemented endpoints (JSON in/out, ``Content-Type: application/json`` exactly, which the
client's response hook requires)
---------------------------------------------------------------------------------------
* ``GET /healthcheck``, ``GET /apispec.json`` (Swagger 2.0, validates with
  swagger_spec_validator; models ContributionsSchema, ProjectsSchema, StructuresSchema,
  TablesSchema, AttachmentsSchema -- used by ``Client._is_valid_payload``/``get_model``).
* ``/projects/`` GET (filters, ``project__in`` treated as ``name__in``), POST;
  ``/projects/search?term=``; ``/projects/{pk}/`` GET, PUT (``{"columns": []}``
  re-derives columns from the stored data like the real server), DELETE.
* ``/contributions/`` GET (filters ``field[__op]`` with ops in, exact, iexact, ne,
  contains, icontains, (i)startswith, (i)endswith, lt, lte, gt, gte, before, after,
  exists, size, plus ``data__<path>[__value]__<op>``; ``_fields`` incl. ``_all`` and
  dot paths; ``_sort``; ``per_page``/``_limit``/``page``/``_skip``), POST (bulk create),
  PUT (bulk update), DELETE (bulk delete); ``/contributions/{pk}/`` GET, PUT, DELETE;
  ``/contributions/download/gz/?format=json`` (gzip'ed JSON list).
* ``/structures/``, ``/tables/`` (``data_page``/``data_per_page``), ``/attachments/``:
  GET list, ``/{pk}/`` GET, ``/download/gz/``.

Server-side behaviour mimicked (from mpcontribs-api, simplified)
* ``data`` leaves that are numbers or "<number> <unit>" strings become
  ``{"display", "value", "unit"}`` dicts (pint via the client's ``ureg``; the unit is
  converted to an existing project column's unit; with ``compact_units`` the real server's
  ``to_compact()`` is applied, e.g. "0.5 eV" -> "500 meV"); strings with 2+ spaces or a
  non-numeric first word stay strings; NaN values are dropped.  Unknown units -> 400
  (``strict_units=True``; the real server would fail too, less politely).
* data keys: no whitespace/punctuation except ``*`` and ``|`` (one ``|`` at most) --
  so "bulk_modulus" or "K-VRH" are rejected like on the real server (``strict_keys=False``
  relaxes this) --, depth <= 7, no lists -> 400.  Unknown project -> 400.  Existing identifier in a project with
  ``unique_identifiers`` -> 401 ``"<id> already added for <project>"``.  Any error fails
  the whole bulk request (nothing stored).
* components are de-duplicated by md5 (same digest as the client's ``get_md5``);
  contributions list them as ``{"id", "name", "md5"}``.
* POST returns ``{"count": n, "data": [...]}``; PUT ``/contributions/{pk}/`` returns
  ``{"count": 1, "id": pk}`` (``data`` is deep-merged; ``None`` component entries are kept).

Not implemented: notebooks, cards, csv downloads, ``/contributions/search``,
uncertainties ("5+/-1 eV"), query negation (``__not__``), permissions/approval logic.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
import secrets
import string
import threading
import time
from base64 import b64decode, urlsafe_b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import gettempdir
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

try:  # same serialiser as the client -> identical md5 digests for components
    import ujson as _ujson
except ImportError:  # pragma: no cover
    _ujson = None

CHECKED_CLIENT_VERSION = "5.10.5"
# mirror of mpcontribs.client.PORTS (whitelisted for http://localhost:PORT)
WHITELISTED_PORTS = (5000, 5002, 5003, 5005, 10000, 10002, 10003, 10005, 20000, 20005)
COMPONENTS = ("structures", "tables", "attachments")
QUANTITY_KEYS = {"display", "value", "error", "unit"}
DATA_PATTERN = r"^data__((?!__).)*$"
MAX_DEPTH = 7
# real server (mpcontribs.api.valid_key): no punctuation except "*" and "|", no whitespace
_INVALID_KEY_CHARS = set(
    string.punctuation.replace("*", "").replace("|", "") + string.whitespace
)

# --------------------------------------------------------------------------------------
# resource configuration (mirrors the *Resource classes of mpcontribs-api)
# --------------------------------------------------------------------------------------
_STRINGS = ["in", "exact", "iexact", "ne", "contains", "icontains", "startswith",
            "istartswith", "endswith", "iendswith"]
_LONG_STRINGS = ["contains", "icontains", "startswith", "istartswith", "endswith",
                 "iendswith"]
_NUMBERS = ["lt", "lte", "gt", "gte"]
_DATES = ["before", "after"]
_OP_TYPES = {
    "in": "array", "lt": "number", "lte": "number", "gt": "number", "gte": "number",
    "exists": "boolean", "boolean": "boolean", "size": "integer",
}
ALL_OPS = set(_STRINGS + _NUMBERS + _DATES + ["exists", "size"])

BULK_UPDATE_LIMIT = 1000
RESOURCES: dict[str, dict[str, Any]] = {
    "contributions": {
        "id_field": "id",
        "fields": ["id", "project", "identifier", "formula", "is_public",
                   "last_modified", "needs_build"],
        "optional": ["data", "structures", "tables", "attachments", "notebook"],
        "filters": {
            "id": ["in", "exact"], "project": _STRINGS, "identifier": _STRINGS,
            "formula": _STRINGS, "is_public": ["boolean"], "last_modified": _DATES,
            "needs_build": ["boolean"],
            DATA_PATTERN: _STRINGS + _NUMBERS + _DATES + ["exists"],
            "structures": ["size"], "tables": ["size"], "attachments": ["size"],
        },
        "ordering": ["id", "project", "identifier", "formula", "is_public",
                     "last_modified", "needs_build"],
        "default_limit": 200, "max_limit": 1500, "paginate_fields": {},
        "methods": ["Fetch", "Delete", "Update", "BulkFetch", "BulkCreate",
                    "BulkUpdate", "BulkDelete", "Download"],
    },
    "projects": {
        "id_field": "name",
        "fields": ["name", "is_public", "title", "owner", "is_approved",
                   "unique_identifiers"],
        "optional": ["long_title", "authors", "description", "references", "license",
                     "other", "columns", "stats"],
        "filters": {
            "name": _STRINGS, "is_public": ["boolean"], "title": _STRINGS,
            "long_title": _LONG_STRINGS, "authors": _LONG_STRINGS,
            "description": _LONG_STRINGS, "owner": _STRINGS, "license": _STRINGS,
            "is_approved": ["boolean"], "unique_identifiers": ["boolean"],
            "columns": ["size"], "stats__contributions": _NUMBERS,
        },
        "ordering": ["name", "is_public", "title"],
        "default_limit": 100, "max_limit": 500, "paginate_fields": {},
        "methods": ["Fetch", "Create", "Delete", "Update", "BulkFetch"],
    },
    "structures": {
        "id_field": "id", "fields": ["id", "name", "md5"],
        "optional": ["lattice", "sites", "charge"],
        "filters": {"id": ["in", "exact"], "name": ["in", "exact", "contains"],
                    "md5": ["in", "exact"]},
        "ordering": ["name"], "default_limit": 10, "max_limit": 100,
        "paginate_fields": {}, "methods": ["Fetch", "BulkFetch", "Download"],
    },
    "tables": {
        "id_field": "id", "fields": ["id", "name", "md5"],
        "optional": ["attrs", "index", "columns", "data", "total_data_rows",
                     "total_data_pages"],
        "filters": {"id": ["in", "exact"], "name": ["in", "exact", "contains"],
                    "columns": ["icontains"], "md5": ["in", "exact"]},
        "ordering": ["name"], "default_limit": 10, "max_limit": 100,
        "paginate_fields": {"data": (20, 1000)},
        "methods": ["Fetch", "BulkFetch", "Download"],
    },
    "attachments": {
        "id_field": "id", "fields": ["id", "name", "mime", "md5"],
        "optional": ["content"],
        "filters": {"id": ["in", "exact"], "name": ["in", "exact", "contains"],
                    "mime": ["in", "exact", "contains"], "md5": ["in", "exact"]},
        "ordering": ["name", "mime"], "default_limit": 10, "max_limit": 100,
        "paginate_fields": {}, "methods": ["Fetch", "BulkFetch", "Download"],
    },
}


# --------------------------------------------------------------------------------------
# Swagger 2.0 spec
# --------------------------------------------------------------------------------------
def _definitions() -> dict:
    str_, bool_, num, int_ = ({"type": t} for t in ("string", "boolean", "number", "integer"))
    component_items = lambda name: {"$ref": f"#/definitions/{name}"}  # noqa: E731
    return {
        "ContributionsSchema": {
            "type": "object",
            "required": ["project", "identifier"],
            "properties": {
                "id": dict(str_, readOnly=True),
                "project": dict(str_),
                "identifier": dict(str_, description="material/composition identifier"),
                "formula": dict(str_),
                "is_public": dict(bool_),
                "last_modified": dict(str_),
                "needs_build": dict(bool_),
                "data": {"type": "object", "description": "simple free-form data"},
                "structures": {"type": "array", "maxItems": 10,
                               "items": component_items("StructuresSchema")},
                "tables": {"type": "array", "maxItems": 10,
                           "items": component_items("TablesSchema")},
                "attachments": {"type": "array", "maxItems": 10,
                                "items": component_items("AttachmentsSchema")},
                "notebook": dict(str_),
            },
        },
        "StructuresSchema": {
            "type": "object", "x-nullable": True,
            "required": ["lattice", "sites"],
            "properties": {
                "id": dict(str_, readOnly=True), "name": dict(str_), "md5": dict(str_),
                "lattice": {"type": "object"}, "sites": {"type": "array", "items": {"type": "object"}},
                "charge": dict(num, **{"x-nullable": True}),
            },
        },
        "TablesSchema": {
            "type": "object", "x-nullable": True,
            "required": ["index", "columns", "data"],
            "properties": {
                "id": dict(str_, readOnly=True), "name": dict(str_), "md5": dict(str_),
                "attrs": {"type": "object"},
                "index": {"type": "array", "items": {}},
                "columns": {"type": "array", "items": {}},
                "data": {"type": "array", "items": {"type": "array", "items": {}}},
                "total_data_rows": dict(int_), "total_data_pages": dict(int_),
            },
        },
        "AttachmentsSchema": {
            "type": "object", "x-nullable": True,
            "required": ["mime", "content"],
            "properties": {
                "id": dict(str_, readOnly=True), "name": dict(str_), "md5": dict(str_),
                "mime": dict(str_), "content": dict(str_),
            },
        },
        "ProjectsSchema": {
            "type": "object",
            "required": ["name", "title", "authors", "description", "references"],
            "properties": {
                "name": dict(str_, pattern="^[a-zA-Z0-9_]{3,31}$", minLength=3, maxLength=30),
                "is_public": dict(bool_), "title": dict(str_, minLength=5, maxLength=30),
                "long_title": dict(str_, minLength=5, maxLength=55),
                "authors": dict(str_), "description": dict(str_, minLength=5, maxLength=2000),
                "references": {"type": "array", "minItems": 1, "maxItems": 20, "items": {
                    "type": "object", "required": ["label", "url"],
                    "properties": {"label": dict(str_, minLength=3, maxLength=20),
                                   "url": dict(str_)}}},
                "license": dict(str_, enum=["CCA4", "CCPD"]),
                "other": {"type": "object", "x-nullable": True},
                "owner": dict(str_), "is_approved": dict(bool_),
                "unique_identifiers": dict(bool_),
                "columns": {"type": "array", "maxItems": 160, "items": {
                    "type": "object", "required": ["path"],
                    "properties": {"path": dict(str_), "min": dict(num), "max": dict(num),
                                   "unit": dict(str_)}}},
                "stats": {"type": "object", "properties": {
                    k: dict(int_) for k in ("columns", "contributions", "tables",
                                            "structures", "attachments")} | {"size": dict(num)}},
            },
        },
    }


def _filter_params(label: str, ops: list[str]) -> list[dict]:
    is_pattern = label.startswith("^")
    params = []
    for op in ops:
        if op in ("exact", "boolean") and not is_pattern:
            name = label
        else:
            name = f"{label}__{op}"
        typ = _OP_TYPES.get(op, "string")
        p = {"name": name, "in": "query", "type": typ, "description": f"filter {label} via ${op}"}
        if typ == "array":
            p["items"] = {"type": "string"}
        params.append(p)
    return params


def _limit_params(cfg: dict, bulk: bool) -> list[dict]:
    default, maximum = cfg["default_limit"], BULK_UPDATE_LIMIT if bulk else cfg["max_limit"]
    return [
        {"name": "_skip", "in": "query", "type": "integer"},
        {"name": "_limit", "in": "query", "type": "integer", "default": default, "maximum": maximum},
        {"name": "page", "in": "query", "type": "integer"},
        {"name": "per_page", "in": "query", "type": "integer", "default": default, "maximum": maximum},
    ]


def build_apispec(version: str = "standin") -> dict:
    """Minimal but valid Swagger 2.0 description of the implemented subset."""
    paths: dict[str, dict] = {}
    err = {"description": "Error",
           "schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
    for coll, cfg in RESOURCES.items():
        doc = coll[:-1].capitalize()
        schema_ref = {"$ref": f"#/definitions/{doc}sSchema"}
        id_field = cfg["id_field"].capitalize()
        fields_param = {"name": "_fields", "in": "query", "type": "array",
                        "items": {"type": "string"}, "default": list(cfg["fields"]),
                        "description": f"fields: {cfg['fields'] + cfg['optional'] + ['_all']}"}
        page_params = []
        for field, (d, m) in cfg["paginate_fields"].items():
            page_params += [
                {"name": f"{field}_page", "in": "query", "type": "integer", "default": 1},
                {"name": f"{field}_per_page", "in": "query", "type": "integer",
                 "default": d, "maximum": m},
            ]
        filters = [p for k, v in cfg["filters"].items() for p in _filter_params(k, v)]
        sort = [{"name": "_sort", "in": "query", "type": "string"}]
        pk = {"name": "pk", "in": "path", "type": "string", "required": True}
        list_props = {"data": {"type": "array", "items": schema_ref},
                      "has_more": {"type": "boolean"}, "total_count": {"type": "integer"},
                      "total_pages": {"type": "integer"}}
        count_props = {"count": {"type": "integer"}, "has_more": {"type": "boolean"},
                       "total_count": {"type": "integer"}, "total_pages": {"type": "integer"}}
        tags = [coll]
        base, item, dl = f"/{coll}/", f"/{coll}/{{pk}}/", f"/{coll}/download/{{short_mime}}/"
        for method in cfg["methods"]:
            if method == "Fetch":
                paths.setdefault(item, {})["get"] = {
                    "tags": tags, "operationId": f"get{doc}By{id_field}",
                    "parameters": [pk, fields_param] + page_params,
                    "responses": {"200": {"description": "entry", "schema": schema_ref},
                                  "default": err}}
            elif method == "BulkFetch":
                paths.setdefault(base, {})["get"] = {
                    "tags": tags, "operationId": f"query{doc}s",
                    "parameters": [fields_param] + page_params + sort + filters
                    + _limit_params(cfg, False),
                    "responses": {"200": {"description": "list", "schema": {
                        "type": "object", "properties": list_props}}, "default": err}}
            elif method == "Download":
                paths.setdefault(dl, {})["get"] = {
                    "tags": tags, "operationId": f"download{doc}s",
                    "produces": ["application/gzip"],
                    "parameters": [
                        {"name": "short_mime", "in": "path", "type": "string",
                         "required": True, "default": "gz"},
                        {"name": "format", "in": "query", "type": "string", "required": True},
                        fields_param] + sort + filters + _limit_params(cfg, False),
                    "responses": {"200": {"description": "download", "schema": {"type": "file"}},
                                  "default": err}}
            elif method == "Create":
                paths.setdefault(base, {})["post"] = {
                    "tags": tags, "operationId": f"create{doc}",
                    "parameters": [{"name": coll[:-1], "in": "body", "schema": schema_ref}],
                    "responses": {"200": {"description": "created", "schema": schema_ref},
                                  "default": err}}
            elif method == "BulkCreate":
                paths.setdefault(base, {})["post"] = {
                    "tags": tags, "operationId": f"create{doc}s",
                    "parameters": [{"name": coll, "in": "body", "schema": {
                        "type": "array", "items": schema_ref}}],
                    "responses": {"200": {"description": "created", "schema": {
                        "type": "object", "properties": {
                            "count": {"type": "integer"},
                            "data": {"type": "array", "items": schema_ref}}}},
                        "default": err}}
            elif method == "Update":
                paths.setdefault(item, {})["put"] = {
                    "tags": tags, "operationId": f"update{doc}By{id_field}",
                    "parameters": [pk, {"name": coll[:-1], "in": "body",
                                        "schema": {"type": "object"}}],
                    "responses": {"200": {"description": "updated", "schema": {"type": "object"}},
                                  "default": err}}
            elif method == "BulkUpdate":
                paths.setdefault(base, {})["put"] = {
                    "tags": tags, "operationId": f"update{doc}s",
                    "parameters": filters + [{"name": coll, "in": "body",
                                              "schema": {"type": "object"}}]
                    + _limit_params(cfg, True),
                    "responses": {"200": {"description": "updated", "schema": {
                        "type": "object", "properties": count_props}}, "default": err}}
            elif method == "BulkDelete":
                paths.setdefault(base, {})["delete"] = {
                    "tags": tags, "operationId": f"delete{doc}s",
                    "parameters": filters + _limit_params(cfg, True),
                    "responses": {"200": {"description": "deleted", "schema": {
                        "type": "object", "properties": count_props}}, "default": err}}
            elif method == "Delete":
                paths.setdefault(item, {})["delete"] = {
                    "tags": tags, "operationId": f"delete{doc}By{id_field}",
                    "parameters": [pk],
                    "responses": {"200": {"description": "deleted"}, "default": err}}
    return {
        "swagger": "2.0",
        "info": {"title": "MPContribs API (local stand-in)", "version": version},
        "host": "127.0.0.1", "basePath": "/", "schemes": ["http"],
        "consumes": ["application/json"], "produces": ["application/json"],
        "securityDefinitions": {"ApiKeyAuth": {"type": "apiKey", "in": "header",
                                               "name": "x-api-key"}},
        "security": [{"ApiKeyAuth": []}],
        "tags": [{"name": c} for c in RESOURCES],
        "paths": paths,
        "definitions": _definitions(),
    }


# --------------------------------------------------------------------------------------
# client cache helpers
# --------------------------------------------------------------------------------------
def spec_cache_file(host: str, version: str, protocol: str = "http") -> Path:
    """Path under which ``mpcontribs.client._raw_specs`` caches the spec."""
    url4fn = f"{protocol}://{host}/apispec-{version}.json".encode("utf-8")
    return Path(gettempdir()) / urlsafe_b64encode(url4fn).decode("utf-8")


def reset_client_caches() -> None:
    """Clear the in-process memoisation of mpcontribs.client (_load, _raw_specs, ...)."""
    try:
        import mpcontribs.client as mc
    except Exception:  # pragma: no cover - client not installed
        return
    for name in ("_load", "_raw_specs", "_version", "_expand_params"):
        fn = getattr(mc, name, None)
        if fn is None:
            continue
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
        elif hasattr(fn, "cache"):
            fn.cache.clear()


# --------------------------------------------------------------------------------------
# helpers: ids, md5, quantities, filters, projection
# --------------------------------------------------------------------------------------
def _oid() -> str:
    return f"{int(time.time()):08x}" + secrets.token_hex(8)


def _md5(d: dict) -> str:
    from hashlib import md5
    if _ujson is not None:
        s = _ujson.dumps(d, sort_keys=True).encode("utf-8")
    else:  # pragma: no cover
        s = json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return md5(s).hexdigest()


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _is_float(s: Any) -> bool:
    try:
        float(s)
    except (TypeError, ValueError):
        return False
    return True


def _ureg():
    try:
        from mpcontribs.client import ureg
        return ureg
    except Exception:  # pragma: no cover
        return None


def _flatten(d: dict, prefix: str = "", stop_at_quantity: bool = True) -> dict:
    out = {}
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and not (stop_at_quantity and v and set(v) <= QUANTITY_KEYS
                                        and "display" in v):
            out.update(_flatten(v, path, stop_at_quantity))
        else:
            out[path] = v
    return out


def _get_path(doc: Any, path: str) -> Any:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


_MISSING = object()


def _set_path(doc: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    cur = doc
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def _deep_merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and not (
                set(dst[k]) <= QUANTITY_KEYS and "display" in dst[k]):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def _as_bool(s: Any) -> bool:
    if isinstance(s, bool):
        return s
    return str(s).strip().lower() in ("true", "1", "yes", "y")


def _cmp_value(v: Any) -> Any:
    if isinstance(v, dict) and "value" in v:  # quantity -> compare numeric value
        return v["value"]
    return v


def _match(doc_value: Any, op: str, raw: str) -> bool:
    if op == "exists":
        return (doc_value is not _MISSING) == _as_bool(raw)
    if doc_value is _MISSING:
        return op == "ne"
    if op == "size":
        return isinstance(doc_value, list) and len(doc_value) == int(raw)
    v = _cmp_value(doc_value)
    if op in ("lt", "lte", "gt", "gte"):
        try:
            a, b = float(v), float(raw)
        except (TypeError, ValueError):
            return False
        return {"lt": a < b, "lte": a <= b, "gt": a > b, "gte": a >= b}[op]
    if op in ("before", "after"):
        return (str(v) < raw) if op == "before" else (str(v) > raw)
    if isinstance(v, bool):
        if op in ("exact", "boolean"):
            return v == _as_bool(raw)
        if op == "ne":
            return v != _as_bool(raw)
    sv = "" if v is None else (repr(v) if isinstance(v, float) and not v.is_integer() else str(v))
    if isinstance(v, (int, float)) and not isinstance(v, bool) and _is_float(raw):
        if op == "exact":
            return float(v) == float(raw)
        if op == "ne":
            return float(v) != float(raw)
        if op == "in":
            return any(_is_float(x) and float(x) == float(v) for x in raw.split(","))
    if op == "in":
        return sv in [x for x in raw.split(",")]
    if op == "exact":
        return sv == raw
    if op == "iexact":
        return sv.lower() == raw.lower()
    if op == "ne":
        return sv != raw
    if op == "contains":
        return raw in sv
    if op == "icontains":
        return raw.lower() in sv.lower()
    if op == "startswith":
        return sv.startswith(raw)
    if op == "istartswith":
        return sv.lower().startswith(raw.lower())
    if op == "endswith":
        return sv.endswith(raw)
    if op == "iendswith":
        return sv.lower().endswith(raw.lower())
    return False


_RESERVED = {"_fields", "_sort", "_limit", "_skip", "page", "per_page", "format",
             "data_page", "data_per_page", "short_mime", "term"}


def _parse_filters(params: dict[str, str], aliases: dict[str, str] | None = None):
    out = []
    for key, raw in params.items():
        if key in _RESERVED:
            continue
        key = (aliases or {}).get(key, key)
        parts = key.split("__")
        op = "exact"
        if len(parts) > 1 and parts[-1] in ALL_OPS | {"boolean"}:
            op = parts.pop()
        out.append((".".join(parts), op, raw))
    return out


def _apply_filters(docs: Iterable[dict], filters, view=None) -> list[dict]:
    res = []
    for doc in docs:
        target = view(doc) if view else doc
        if all(_match(_get_path(target, path), op, raw) for path, op, raw in filters):
            res.append(doc)
    return res


def _sort(docs: list[dict], sort: str | None) -> list[dict]:
    if not sort:
        return docs
    for key in reversed([s for s in sort.split(",") if s]):
        desc = key.startswith("-")
        path = key.lstrip("+-").replace("__", ".")

        def k(d, path=path):
            v = _cmp_value(_get_path(d, path))
            return (v is _MISSING or v is None, str(type(v)), v if v is not _MISSING else 0)

        docs = sorted(docs, key=k, reverse=desc)
    return docs


# --------------------------------------------------------------------------------------
# failure injection
# --------------------------------------------------------------------------------------
class _FailRule:
    def __init__(self, identifier, status, times, error, path, methods, mode):
        self.identifier, self.status, self.times = identifier, status, times
        self.error, self.path, self.methods, self.mode = error, path, methods, mode
        self.hits = 0

    def matches(self, method: str, path: str, identifiers: set[str]) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.methods and method not in self.methods:
            return False
        if self.path and not path.startswith(self.path):
            return False
        if self.identifier is not None and self.identifier not in identifiers:
            return False
        return True


# --------------------------------------------------------------------------------------
# the stand-in server
# --------------------------------------------------------------------------------------
class StandIn:
    """In-memory MPContribs API stand-in (see module docstring).

    Args:
        project: name of a project created at start (``None``: none).
        projects: extra ``{name: {field: value}}`` projects to create.
        unique_identifiers: default for created projects (real default: True).
        fail_identifiers: identifiers whose POST/PUT uploads always fail with
            ``fail_status`` (whole request rejected, nothing stored).
        fail_status: status for ``fail_identifiers`` (default 500; avoid 429/502 --
            the client's urllib3 Retry re-sends those with exponential backoff).
        port: explicit port (default: ephemeral, or first free whitelisted port).
        whitelisted_port: bind one of mpcontribs.client.PORTS, host ``localhost:PORT``.
        register_url: add ``http://HOST`` to ``mpcontribs.client.VALID_URLS`` while running
            (default: True unless ``whitelisted_port``).
        apikey: if given, requests without ``x-api-key: <apikey>`` get 401.
        version: healthcheck version (default unique ``standin-<hex>``).
        strict_units / compact_units / strict_keys: see module docstring
            (``strict_keys=False`` accepts e.g. "bulk_modulus", which the real server rejects).
    """

    def __init__(
        self,
        project: str | None = "aimmat-demo",
        *,
        projects: dict[str, dict] | None = None,
        unique_identifiers: bool = True,
        fail_identifiers: Iterable[str] = (),
        fail_status: int = 500,
        port: int | None = None,
        whitelisted_port: bool = False,
        register_url: bool | None = None,
        apikey: str | None = None,
        version: str | None = None,
        strict_units: bool = True,
        compact_units: bool = True,
        strict_keys: bool = True,
    ):
        self.project = project
        self.unique_identifiers = unique_identifiers
        self.fail_identifiers = set(fail_identifiers)
        self.fail_status = fail_status
        self._want_port = port
        self.whitelisted_port = whitelisted_port
        self.register_url = (not whitelisted_port) if register_url is None else register_url
        self.apikey = apikey
        self.version = version or f"standin-{secrets.token_hex(4)}"
        self.strict_units = strict_units
        self.compact_units = compact_units
        self.strict_keys = strict_keys
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._registered_url: str | None = None
        self.port: int | None = None
        self._rules: list[_FailRule] = []
        self._init_projects = projects or {}
        self.reset()

    # ---- lifecycle -------------------------------------------------------------------
    def reset(self) -> None:
        """Drop all stored data and logs; re-create the configured projects."""
        with self.lock:
            self.projects: dict[str, dict] = {}
            self._contribs: dict[str, dict] = {}
            self._components: dict[str, dict[str, dict]] = {c: {} for c in COMPONENTS}
            self.request_log: list[dict] = []
            self.raw_uploads: list[dict] = []
            if self.project:
                self.add_project(self.project)
            for name, fields in self._init_projects.items():
                self.add_project(name, **fields)

    def _bind(self) -> ThreadingHTTPServer:
        handler = type("Handler", (_Handler,), {"standin": self})
        if self._want_port is not None:
            return ThreadingHTTPServer(("127.0.0.1", self._want_port), handler)
        if self.whitelisted_port:
            for p in WHITELISTED_PORTS:
                try:
                    return ThreadingHTTPServer(("127.0.0.1", p), handler)
                except OSError:
                    continue
            raise RuntimeError(f"none of the whitelisted ports {WHITELISTED_PORTS} is free")
        return ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def start(self) -> "StandIn":
        if self._httpd is not None:
            return self
        self._httpd = self._bind()
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"mpcontribs-standin-{self.port}", daemon=True)
        self._thread.start()
        if self.register_url:
            try:
                import mpcontribs.client as mc
                if self.url not in mc.VALID_URLS:
                    mc.VALID_URLS.add(self.url)
                    self._registered_url = self.url
            except Exception:  # pragma: no cover
                pass
        self.clear_spec_cache()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.clear_spec_cache()
        if self._registered_url:
            try:
                import mpcontribs.client as mc
                mc.VALID_URLS.discard(self._registered_url)
            except Exception:  # pragma: no cover
                pass
            self._registered_url = None
        self._httpd = self._thread = None

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def clear_spec_cache(self) -> None:
        """Remove the client's on-disk apispec cache for this host + clear its memo caches."""
        versions = {self.version}
        try:
            import mpcontribs.client as mc
            versions.add(getattr(mc, "__version__", CHECKED_CLIENT_VERSION))
        except Exception:  # pragma: no cover
            versions.add(CHECKED_CLIENT_VERSION)
        if self.port is not None:
            for v in versions:
                try:
                    spec_cache_file(self.host, v).unlink()
                except FileNotFoundError:
                    pass
        reset_client_caches()

    # ---- addresses / client ------------------------------------------------------------
    @property
    def host(self) -> str:
        name = "localhost" if self.whitelisted_port else "127.0.0.1"
        return f"{name}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def client_kwargs(self, apikey: str | None = None, project: Any = ...) -> dict:
        return {"apikey": apikey or self.apikey or "x" * 32, "host": self.host,
                "project": self.project if project is ... else project}

    def client(self, **kwargs):
        """A ``mpcontribs.client.Client`` connected to this stand-in."""
        from mpcontribs.client import Client
        kw = self.client_kwargs(kwargs.pop("apikey", None), kwargs.pop("project", ...))
        kw.update(kwargs)
        return Client(**kw)

    # ---- failure injection -------------------------------------------------------------
    def fail_next(self, identifier: str | None = None, *, status: int = 500,
                  times: int | None = 1, error: str | None = None, path: str | None = None,
                  methods: Iterable[str] | None = ("POST", "PUT"), mode: str = "request"):
        """Make the next ``times`` matching requests fail (``times=None``: forever).

        Matches requests whose method is in ``methods`` (None: any), whose path starts with
        ``path`` (default: ``/contributions/`` when ``identifier`` is set, else any) and that
        carry ``identifier`` (None: any).  ``mode="request"`` answers ``status`` with
        ``{"error": ...}`` and stores nothing; ``mode="skip"`` (POST only) stores the other
        contributions of the batch and answers 200 with only those in ``data``.
        """
        if mode not in ("request", "skip"):
            raise ValueError("mode must be 'request' or 'skip'")
        if path is None and identifier is not None:
            path = "/contributions/"
        rule = _FailRule(identifier, status, times, error, path,
                         set(methods) if methods else None, mode)
        with self.lock:
            self._rules.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self.lock:
            self._rules.clear()
            self.fail_identifiers.clear()

    # ---- inspection --------------------------------------------------------------------
    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served, in order (query string stripped)."""
        with self.lock:
            return [(r["method"], r["path"]) for r in self.request_log]

    @property
    def uploads(self) -> list[dict]:
        """Log entries of POST/PUT requests to /contributions/... (incl. failed ones)."""
        with self.lock:
            return [r for r in self.request_log if r["method"] in ("POST", "PUT")
                    and r["path"].startswith("/contributions")]

    @property
    def upload_count(self) -> int:
        return len(self.uploads)

    def _resolve(self, doc: dict) -> dict:
        out = copy.deepcopy(doc)
        for comp in COMPONENTS:
            out[comp] = [copy.deepcopy(self._components[comp][i]) if i else None
                         for i in doc.get(comp, [])]
        return out

    @property
    def contributions(self) -> list[dict]:
        """Stored contributions (deep copies) with components resolved to full dicts."""
        with self.lock:
            return [self._resolve(d) for d in self._contribs.values()]

    def contribution(self, identifier: str, project: str | None = None) -> dict:
        with self.lock:
            for d in self._contribs.values():
                if d["identifier"] == identifier and (project is None or d["project"] == project):
                    return self._resolve(d)
        raise KeyError(identifier)

    @property
    def identifiers(self) -> list[str]:
        with self.lock:
            return [d["identifier"] for d in self._contribs.values()]

    @property
    def structures(self) -> dict[str, dict]:
        with self.lock:
            return copy.deepcopy(self._components["structures"])

    @property
    def tables(self) -> dict[str, dict]:
        with self.lock:
            return copy.deepcopy(self._components["tables"])

    @property
    def attachments(self) -> dict[str, dict]:
        with self.lock:
            return copy.deepcopy(self._components["attachments"])

    def add_project(self, name: str, **fields) -> dict:
        with self.lock:
            proj = {
                "name": name, "is_public": False, "title": f"{name} title"[:30],
                "long_title": None, "authors": "A. Stand-In",
                "description": "Local MPContribs stand-in project.",
                "references": [{"label": "REF", "url": "https://example.org"}],
                "license": "CCA4", "other": None, "owner": "google:standin@example.org",
                "is_approved": True, "unique_identifiers": self.unique_identifiers,
                "columns": [],
            }
            proj.update(fields)
            self.projects[name] = proj
            return proj

    # ---- data processing (server-side rules) ---------------------------------------------
    def _columns(self, project: str) -> dict[str, dict]:
        return {c["path"]: c for c in self.projects[project].get("columns", [])}

    def _check_keys(self, data: Any, path: tuple = ()) -> None:
        if isinstance(data, list):
            raise ApiError(400, f"lists not allowed ({'.'.join(path)})!")
        if not isinstance(data, dict):
            return
        for key, value in data.items():
            key = str(key).strip()
            if len(path) + 1 > MAX_DEPTH:
                raise ApiError(400, f"max nesting ({MAX_DEPTH}) exceeded for "
                                    f"{'.'.join(path + (key,))}")
            bad = [c for c in key if c in _INVALID_KEY_CHARS]
            if bad and self.strict_keys:
                raise ApiError(400, f"invalid character {bad[0]} in {key}")
            if key.count("|") > 1:
                raise ApiError(400, f"Only one `|` allowed in {key}. Consider nesting.")
            if not (isinstance(value, dict) and set(value) <= QUANTITY_KEYS and "display" in value):
                self._check_keys(value, path + (key,))

    def _quantity(self, value: Any, field: str, columns: dict) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return value
        str_value = str(value).strip()
        if str_value.count(" ") > 1:
            return value
        column = columns.get(field)
        if column is not None and column.get("unit") == "NaN":
            return str_value
        parts = str_value.split()
        if not parts or not _is_float(parts[0]):
            return value
        number = float(parts[0])
        if math.isnan(number):
            return _MISSING  # silently dropped (like the real server)
        unit = parts[1] if len(parts) == 2 else ""
        ureg = _ureg()
        if ureg is None:  # pragma: no cover - no pint: keep unit verbatim
            disp = f"{number:.6g}" + (f" {unit}" if unit else "")
            return {"display": disp, "value": float(f"{number:.6g}"), "unit": unit}
        try:
            q = ureg.Quantity(number, unit) if unit else ureg.Quantity(number)
        except Exception as ex:
            if self.strict_units:
                raise ApiError(400, f"unit '{unit}' of {field} not supported ({ex})")
            return value
        if column is not None and column.get("unit") not in (None, "NaN"):
            col_unit = column["unit"]
            try:
                if str(f"{q.units:~P}") != col_unit:
                    q = q.to(col_unit) if col_unit else q.to("dimensionless")
            except Exception:
                raise ApiError(400, f"Can't convert [{q.units:~P}] to [{col_unit}] for {field}!")
        elif self.compact_units and unit:
            try:
                q = q.to_compact()
                if not q.dimensionless:
                    q = q.to_reduced_units()
            except Exception:  # pragma: no cover
                pass
        mag = float(f"{float(q.magnitude):.6g}")
        unit_str = "" if q.dimensionless and not unit else f"{q.units:~P}"
        if unit_str == "dimensionless":
            unit_str = ""
        display = f"{mag:g}" + (f" {unit_str}" if unit_str else "")
        return {"display": display, "value": mag, "unit": unit_str}

    def _make_quantities(self, data: dict, project: str, prefix: str = "data") -> dict:
        columns = self._columns(project)
        out = {}
        for key, value in data.items():
            key = str(key).strip()
            field = f"{prefix}.{key}"
            if isinstance(value, dict) and not (set(value) <= QUANTITY_KEYS and "display" in value):
                out[key] = self._make_quantities(value, project, field)
            else:
                q = self._quantity(value, field, columns)
                if q is not _MISSING:
                    out[key] = q
        return out

    def _store_component(self, comp: str, item: dict) -> str:
        if not isinstance(item, dict):
            raise ApiError(400, f"invalid {comp} entry")
        required = {"structures": ("lattice", "sites"), "tables": ("index", "columns", "data"),
                    "attachments": ("mime", "content")}[comp]
        missing = [k for k in required if k not in item]
        if missing:
            raise ApiError(400, f"{comp}: missing {missing}")
        if comp == "attachments":
            try:
                b64decode(item["content"], validate=True)
            except Exception:
                raise ApiError(400, "attachments: content is not valid base64")
        body = {k: v for k, v in item.items() if k not in ("name", "attrs", "id", "md5")}
        digest = _md5(body)
        for cid, existing in self._components[comp].items():
            if existing["md5"] == digest:
                return cid
        cid = _oid()
        doc = {"id": cid, "name": item.get("name", comp[:-1]), "md5": digest}
        doc.update(copy.deepcopy(body))
        if comp == "tables":
            doc["attrs"] = copy.deepcopy(item.get("attrs", {}))
            doc["total_data_rows"] = len(item["data"])
        self._components[comp][cid] = doc
        return cid

    def _prepare_new(self, c: dict, seen: set) -> dict:
        if not isinstance(c, dict):
            raise ApiError(400, "contribution must be an object")
        project, identifier = c.get("project"), c.get("identifier")
        if not project or not identifier:
            raise ApiError(400, "`project` and `identifier` are required")
        if project not in self.projects:
            raise ApiError(400, f"project {project} does not exist")
        unknown = set(c) - set(_definitions()["ContributionsSchema"]["properties"])
        if unknown:
            raise ApiError(400, f"unknown fields {sorted(unknown)}")
        if self.projects[project].get("unique_identifiers", True):
            key = (project, identifier)
            exists = any(d["project"] == project and d["identifier"] == identifier
                         for d in self._contribs.values())
            if exists or key in seen:
                raise ApiError(401, f"{identifier} already added for {project}")
            seen.add(key)
        data = c.get("data") or {}
        self._check_keys(data)
        for comp in COMPONENTS:
            items = c.get(comp) or []
            if not isinstance(items, list) or len(items) > 10:
                raise ApiError(400, f"{comp} must be a list of at most 10 entries")
        return c

    def _insert(self, c: dict) -> dict:
        project = c["project"]
        doc = {
            "id": _oid(), "project": project, "identifier": c["identifier"],
            "formula": c.get("formula") or c["identifier"],
            "is_public": c.get("is_public", True),
            "last_modified": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "needs_build": True,
            "data": self._make_quantities(c.get("data") or {}, project),
        }
        for comp in COMPONENTS:
            doc[comp] = [self._store_component(comp, it) for it in (c.get(comp) or [])]
        self._contribs[doc["id"]] = doc
        return doc

    def _update(self, doc: dict, upd: dict) -> None:
        if not isinstance(upd, dict):
            raise ApiError(400, "update must be an object")
        upd = {k: v for k, v in upd.items() if k not in ("id", "project")}
        if "data" in upd:
            self._check_keys(upd["data"] or {})
        new = copy.deepcopy(doc)
        for k, v in upd.items():
            if k == "data":
                _deep_merge(new["data"], self._make_quantities(v or {}, doc["project"]))
            elif k in COMPONENTS:
                old = doc.get(k, [])
                refs = []
                for i, it in enumerate(v or []):
                    refs.append(old[i] if it is None and i < len(old)
                                else (self._store_component(k, it) if it is not None else None))
                new[k] = [r for r in refs if r]
            elif k in ("identifier", "formula", "is_public", "needs_build"):
                new[k] = v
        new["last_modified"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        new["needs_build"] = True
        doc.clear()
        doc.update(new)

    def _delete(self, cid: str) -> None:
        doc = self._contribs.pop(cid, None)
        if doc is None:
            return
        for comp in COMPONENTS:
            for ref in doc.get(comp, []):
                if not any(ref in d.get(comp, []) for d in self._contribs.values()):
                    self._components[comp].pop(ref, None)

    def _recompute_columns(self, name: str, given: list[dict] | None) -> None:
        proj = self.projects[name]
        docs = [d for d in self._contribs.values() if d["project"] == name]
        columns: dict[str, dict] = {}
        if given:
            for col in given:
                if col.get("path") in COMPONENTS:
                    continue
                columns[col["path"]] = {"path": col["path"], "unit": col.get("unit", "NaN")}
        else:
            for d in docs:
                for path, v in _flatten(d.get("data", {}), "data").items():
                    if path in columns:
                        continue
                    if isinstance(v, dict) and "unit" in v:
                        columns[path] = {"path": path, "unit": v["unit"]}
                    elif isinstance(v, (str, bool)):
                        columns[path] = {"path": path, "unit": "NaN"}
        for path, col in columns.items():
            if col["unit"] == "NaN":
                continue
            vals = [_get_path(d, path) for d in docs]
            nums = [v["value"] for v in vals if isinstance(v, dict)
                    and isinstance(v.get("value"), (int, float))]
            if nums:
                col["min"], col["max"] = min(nums), max(nums)
        for comp in COMPONENTS:
            if any(d.get(comp) for d in docs):
                columns[comp] = {"path": comp, "unit": "NaN"}
        proj["columns"] = list(columns.values())

    def _project_view(self, name: str) -> dict:
        proj = copy.deepcopy(self.projects[name])
        docs = [d for d in self._contribs.values() if d["project"] == name]
        proj["stats"] = {
            "columns": len(proj.get("columns", [])), "contributions": len(docs),
            **{c: len({r for d in docs for r in d.get(c, [])}) for c in COMPONENTS},
            "size": round(len(json.dumps(docs)) / 1024 / 1024, 1),
        }
        return proj

    # ---- projection / pagination -------------------------------------------------------
    def _project_fields(self, coll: str, doc: dict, fields: list[str] | None,
                        params: dict) -> dict:
        cfg = RESOURCES[coll]
        if fields is None:
            fields = cfg["fields"]
        if "_all" in fields:
            fields = cfg["fields"] + cfg["optional"]
        out: dict = {}
        for f in fields:
            if not f:
                continue
            top = f.split(".", 1)[0]
            if coll == "contributions" and top in COMPONENTS:
                out[top] = [{k: self._components[top][r][k] for k in ("id", "name", "md5")}
                            for r in doc.get(top, []) if r in self._components[top]]
                continue
            if coll == "tables" and f in ("data", "total_data_pages"):
                d, m = cfg["paginate_fields"]["data"]
                per = min(int(params.get("data_per_page") or d), m)
                page = max(int(params.get("data_page") or 1), 1)
                rows = doc.get("data", [])
                if f == "data":
                    out["data"] = rows[(page - 1) * per: page * per]
                else:
                    out["total_data_pages"] = math.ceil(len(rows) / per)
                continue
            v = _get_path(doc, f)
            if v is not _MISSING and v is not None:
                _set_path(out, f, copy.deepcopy(v))
        return out

    def _paginate(self, coll: str, docs: list, params: dict, bulk: bool = False):
        cfg = RESOURCES[coll]
        maximum = BULK_UPDATE_LIMIT if bulk else cfg["max_limit"]
        per = params.get("per_page") or params.get("_limit") or cfg["default_limit"]
        per = max(1, min(int(per), maximum))
        total = len(docs)
        pages = math.ceil(total / per)
        if params.get("page"):
            start = (max(int(params["page"]), 1) - 1) * per
        else:
            start = int(params.get("_skip") or 0)
        chunk = docs[start:start + per]
        meta = {"has_more": start + per < total, "total_count": total, "total_pages": pages}
        return chunk, meta


def _fields_param(params: dict) -> list[str] | None:
    if "_fields" not in params:
        return None
    return [f.strip() for f in params["_fields"].split(",") if f.strip()]


# --------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    standin: StandIn  # set on the per-server subclass
    server_version = "MPContribsStandIn/1.0"
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PUT")

    # ---- plumbing ----------------------------------------------------------------------
    def _send(self, status: int, payload: Any = None, content_type="application/json",
              raw: bytes | None = None):
        body = raw if raw is not None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return status

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON")

    def _dispatch(self, method: str):
        s = self.standin
        parts = urlsplit(self.path)
        path = parts.path if parts.path.endswith("/") or "." in parts.path.rsplit("/", 1)[-1] \
            else parts.path + "/"
        qs = parse_qs(parts.query, keep_blank_values=True)
        params = {k: ",".join(v) for k, v in qs.items()}
        entry = {"method": method, "path": parts.path, "params": params, "status": None,
                 "identifiers": [], "time": time.time()}
        try:
            body = self._body() if method in ("POST", "PUT") else None
        except ApiError as ex:
            body, entry["status"] = None, self._send(ex.status, {"error": ex.message})
            with s.lock:
                s.request_log.append(entry)
            return
        with s.lock:
            s.request_log.append(entry)
            try:
                entry["status"] = self._handle(method, path, params, body, entry)
            except ApiError as ex:
                entry["status"] = self._send(ex.status, {"error": ex.message})
            except Exception as ex:  # pragma: no cover - bug in the stand-in
                import traceback
                entry["status"] = self._send(500, {"error": f"stand-in bug: {ex!r}\n"
                                                           + traceback.format_exc()})

    def _identifiers(self, path: str, body: Any) -> set[str]:
        s = self.standin
        ids = set()
        items = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
        for it in items:
            if isinstance(it, dict) and isinstance(it.get("identifier"), str):
                ids.add(it["identifier"])
        m = re.match(r"^/contributions/([0-9a-f]{24})/$", path)
        if m and m.group(1) in s._contribs:
            ids.add(s._contribs[m.group(1)]["identifier"])
        return ids

    def _check_failures(self, method: str, path: str, body: Any, entry: dict):
        """Returns (rule, identifiers) if an injected failure applies."""
        s = self.standin
        ids = self._identifiers(path, body)
        entry["identifiers"] = sorted(ids)
        if method in ("POST", "PUT") and path.startswith("/contributions/") \
                and ids & s.fail_identifiers:
            bad = sorted(ids & s.fail_identifiers)
            raise ApiError(s.fail_status, f"stand-in: injected failure for {bad}")
        for rule in s._rules:
            if rule.matches(method, path, ids):
                rule.hits += 1
                if rule.mode == "skip" and method == "POST" and rule.identifier:
                    return rule
                raise ApiError(rule.status, rule.error or
                               f"stand-in: injected failure ({method} {path} {sorted(ids)})")
        return None

    def _handle(self, method: str, path: str, params: dict, body: Any, entry: dict) -> int:
        s = self.standin
        if path in ("/healthcheck/",):
            return self._send(200, {"version": s.version})
        if path == "/apispec.json" or re.match(r"^/apispec(-[^/]+)?\.json$", path):
            return self._send(200, build_apispec(s.version))
        if s.apikey is not None and self.headers.get("x-api-key") != s.apikey:
            raise ApiError(401, "invalid or missing API key")
        skip_rule = self._check_failures(method, path, body, entry)

        segs = [p for p in path.split("/") if p]
        if not segs or segs[0] not in RESOURCES:
            raise ApiError(404, f"no route for {method} {path}")
        coll = segs[0]
        if coll == "projects":
            return self._projects(method, segs, params, body)
        if len(segs) >= 2 and segs[1] == "download":
            if method != "GET":
                raise ApiError(405, "method not allowed")
            return self._download(coll, params)
        if coll == "contributions":
            return self._contributions(method, segs, params, body, skip_rule)
        if method != "GET":
            raise ApiError(405, "method not allowed")
        return self._components(coll, segs, params)

    # ---- projects ----------------------------------------------------------------------
    def _projects(self, method, segs, params, body):
        s = self.standin
        if len(segs) == 1:
            if method == "GET":
                filters = _parse_filters(params, {"project__in": "name__in",
                                                  "project": "name"})
                names = [p["name"] for p in _apply_filters(
                    [s._project_view(n) for n in s.projects], filters)]
                docs = _sort([s._project_view(n) for n in names], params.get("_sort"))
                chunk, meta = s._paginate("projects", docs, params)
                fields = _fields_param(params)
                data = [s._project_fields("projects", d, fields, params) for d in chunk]
                if fields and "columns" in fields:
                    for d in data:
                        d.setdefault("columns", [])
                return self._send(200, {"data": data, **meta})
            if method == "POST":
                if not isinstance(body, dict) or not body.get("name"):
                    raise ApiError(400, "project `name` required")
                if not re.match(r"^[a-zA-Z0-9_]{3,31}$", body["name"]):
                    raise ApiError(400, f"invalid project name {body['name']}")
                if body["name"] in s.projects:
                    raise ApiError(400, f"project {body['name']} exists")
                fields = {k: v for k, v in body.items() if k not in ("columns", "stats")}
                fields.setdefault("is_approved", False)
                proj = s.add_project(body["name"], **fields)
                return self._send(200, copy.deepcopy(proj))
            raise ApiError(405, "method not allowed")
        if segs[1] == "search":
            term = params.get("term", "").lower()
            hits = [n for n, p in s.projects.items()
                    if any(term in str(v).lower() for v in p.values())]
            return self._send(200, hits)
        name = segs[1]
        if name not in s.projects:
            raise ApiError(404, f"project {name} not found")
        if method == "GET":
            return self._send(200, s._project_fields(
                "projects", s._project_view(name), _fields_param(params), params))
        if method == "PUT":
            if not isinstance(body, dict):
                raise ApiError(400, "update must be an object")
            proj = s.projects[name]
            for k, v in body.items():
                if k in ("columns", "stats", "name"):
                    continue
                proj[k] = v
            if "columns" in body:
                s._recompute_columns(name, body["columns"])
            return self._send(200, {"count": 1})
        if method == "DELETE":
            for cid in [c for c, d in s._contribs.items() if d["project"] == name]:
                s._delete(cid)
            del s.projects[name]
            return self._send(200, {"count": 1})
        raise ApiError(405, "method not allowed")

    # ---- contributions -----------------------------------------------------------------
    def _query(self, coll, params):
        s = self.standin
        if coll == "contributions":
            docs = list(s._contribs.values())
        else:
            docs = list(s._components[coll].values())
        docs = _apply_filters(docs, _parse_filters(params))
        return _sort(docs, params.get("_sort"))

    def _contributions(self, method, segs, params, body, skip_rule):
        s = self.standin
        if len(segs) == 1:
            if method == "GET":
                chunk, meta = s._paginate("contributions", self._query("contributions", params),
                                          params)
                fields = _fields_param(params)
                data = [s._project_fields("contributions", d, fields, params) for d in chunk]
                return self._send(200, {"data": data, **meta})
            if method == "POST":
                items = body if isinstance(body, list) else [body]
                s.raw_uploads.extend(copy.deepcopy(items))
                if skip_rule is not None:
                    items = [c for c in items if not (isinstance(c, dict)
                                                      and c.get("identifier") == skip_rule.identifier)]
                seen: set = set()
                prepared = [s._prepare_new(c, seen) for c in items]
                # validate quantities before storing anything (all-or-nothing)
                for c in prepared:
                    s._make_quantities(c.get("data") or {}, c["project"])
                docs = [s._insert(c) for c in prepared]
                data = [s._project_fields("contributions", d, None, params) for d in docs]
                return self._send(200, {"count": len(docs), "data": data})
            if method in ("PUT", "DELETE"):
                docs = self._query("contributions", params)
                chunk, meta = s._paginate("contributions", docs, params, bulk=True)
                for d in chunk:
                    if method == "PUT":
                        s._update(d, body or {})
                    else:
                        s._delete(d["id"])
                return self._send(200, {"count": len(chunk), **meta})
            raise ApiError(405, "method not allowed")
        cid = segs[1]
        if cid not in s._contribs:
            raise ApiError(404, f"contribution {cid} not found")
        if method == "GET":
            return self._send(200, s._project_fields("contributions", s._contribs[cid],
                                                     _fields_param(params), params))
        if method == "PUT":
            s.raw_uploads.append(copy.deepcopy(body))
            s._update(s._contribs[cid], body or {})
            return self._send(200, {"count": 1, "id": cid})
        if method == "DELETE":
            s._delete(cid)
            return self._send(200, {"count": 1})
        raise ApiError(405, "method not allowed")

    # ---- components / downloads ----------------------------------------------------------
    def _components(self, coll, segs, params):
        s = self.standin
        fields = _fields_param(params)
        if len(segs) == 1:
            chunk, meta = s._paginate(coll, self._query(coll, params), params)
            data = [s._project_fields(coll, d, fields, params) for d in chunk]
            return self._send(200, {"data": data, **meta})
        doc = s._components[coll].get(segs[1])
        if doc is None:
            raise ApiError(404, f"{coll[:-1]} {segs[1]} not found")
        return self._send(200, s._project_fields(coll, doc, fields, params))

    def _download(self, coll, params):
        s = self.standin
        if params.get("format", "json") != "json":
            raise ApiError(400, "stand-in only supports format=json")
        chunk, _ = s._paginate(coll, self._query(coll, params), params)
        fields = _fields_param(params)
        data = [s._project_fields(coll, d, fields, params) for d in chunk]
        raw = gzip.compress(json.dumps(data).encode("utf-8"))
        return self._send(200, raw=raw, content_type="application/gzip")


__all__ = ["StandIn", "build_apispec", "reset_client_caches", "spec_cache_file",
           "CHECKED_CLIENT_VERSION", "WHITELISTED_PORTS"]


if __name__ == "__main__":  # manual smoke run: python tests/mpcontribs_standin.py
    with StandIn() as srv:
        print(f"stand-in at {srv.url} (project {srv.project}); Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
