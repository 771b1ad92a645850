"""The seed catalog: every node and numbered flow of the seed document, as route templates.

NAME
    catalog - load the seed catalog (gateway/catalog_data/*.toml) and judge a config route against it

DESCRIPTION
    The catalog is data (``gateway/catalog_data/``, also reached as ``config/catalog/`` in a source
    checkout; see its README): one file of nodes and one file per
    seed document. A seed reference is ``DOCUMENT:NUMBER`` in the seed's own numbering
    (``jimu:1-⑥``, ``ido-ocr:⑤``; ``jimu:1-6`` is read as ``jimu:1-⑥``), optionally with ``/N``
    to name one leg of a multi-hop flow (``jimu:1-⑫/2``).

    ``check_route(route)`` returns why a config route may not exist, or None:
      - its ``seed`` names no flow in the catalog, or a leg the flow does not have;
      - the seed document has no data linkage (申請受付支援) or the flow is not a message flow
        (a counter step, a print-out, processing inside one system, an overview item);
      - the route is looser than the catalog: ``personal_number = "allowed"`` where the flow (or,
        without ``/N``, any of its legs) is ``forbidden``.
    ``advise_route(route)`` returns non-fatal advice for ``jgw check-config`` (ordering, encoding,
    a leg that runs on 住基ネット).

    The catalog ships inside the package (``gateway/catalog_data``, package data of the wheel) and
    is found with ``importlib.resources``, in a source checkout and an installed bundle alike;
    ``$JGW_CATALOG`` names another directory instead (to try an amended catalog before it ships).

Security: reads local files shipped with jgw; no message data.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import ConfigError
from gateway.options import Options
from gateway.policy.detector import EncodingError, canonical_encoding

KINDS = ("message", "manual", "internal", "summary", "no-linkage")
NODE_KINDS = ("system", "terminal", "person", "outside")
NETWORKS = ("business", "lgwan", "jukinet", "johoteikyo-nw", "counter", "internal")
#: Networks jgw does not carry: J-LIS's own protocols (domain-japan §0.1) and the national NWS.
FOREIGN_NETWORKS = ("jukinet", "johoteikyo-nw")
ORDERINGS = ("person", "none")
CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"
_SECTIONED = re.compile(rf"^\d{{1,2}}-[{CIRCLED}]$")
_PLAIN = re.compile(rf"^[{CIRCLED}]$")
_DOC_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_REF = re.compile(rf"^(?P<doc>[a-z][a-z0-9-]*):(?P<num>(?:\d{{1,2}}-)?(?:[{CIRCLED}]|\d{{1,2}}))"
                  rf"(?:/(?P<leg>\d{{1,2}}))?$")


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    kind: str
    site: str
    aliases: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Leg:
    source: str
    target: str
    network: str
    personal_number: str
    basis: str
    encoding: str | None  # None: unknown ([U]); otherwise a name the policy scanner knows
    encoding_basis: str = ""


@dataclass(frozen=True)
class Flow:
    ref: str  # qualified: "jimu:1-⑥"
    document: str
    number: str  # as in the seed: "1-⑥"
    name: str
    text: str
    kind: str
    legs: tuple[Leg, ...]
    personal_number: str  # the strictest of the legs (or the flow's own value)
    basis: str
    ordering: str = "none"
    reply: str | None = None
    reply_to: str | None = None
    correlation: str | None = None
    same_as: str | None = None
    see: tuple[str, ...] = ()
    note: str = ""

    @property
    def is_route(self) -> bool:
        return self.kind == "message"


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    subject: str
    seed_start: str
    order: int
    numbering: str
    linkage: str
    linkage_basis: str
    sections: Mapping[str, str]
    flows: tuple[Flow, ...]
    file: Path


@dataclass(frozen=True)
class Catalog:
    directory: Path
    nodes: Mapping[str, Node]
    documents: tuple[Document, ...]
    flows: Mapping[str, Flow] = field(default_factory=dict)

    def document(self, doc_id: str) -> Document | None:
        return next((d for d in self.documents if d.id == doc_id), None)

    def __iter__(self) -> Iterator[Flow]:
        for doc in self.documents:
            yield from doc.flows

    def lookup(self, reference: str) -> tuple[Flow, Leg | None]:
        """The flow (and the leg, with ``/N``) a seed reference names; ValueError saying why not."""
        m = _REF.match(reference.strip())
        if not m:
            raise ValueError(f"seed reference {reference[:60]!r} is not DOCUMENT:NUMBER such as 'jimu:1-⑥' "
                             f"(documents: {', '.join(d.id for d in self.documents)})")
        doc_id, num = m.group("doc"), normalise_number(m.group("num"))
        if self.document(doc_id) is None:
            raise ValueError(f"seed reference {reference!r}: no seed document {doc_id!r} "
                             f"(documents: {', '.join(d.id for d in self.documents)})")
        flow = self.flows.get(f"{doc_id}:{num}")
        if flow is None:
            raise ValueError(f"seed reference {reference!r}: the seed document {doc_id!r} has no flow {num}")
        leg = None
        if m.group("leg"):
            index = int(m.group("leg"))
            if not 1 <= index <= len(flow.legs):
                raise ValueError(f"seed reference {reference!r}: flow {flow.ref} has {len(flow.legs)} leg(s)")
            leg = flow.legs[index - 1]
        return flow, leg


def normalise_number(num: str) -> str:
    """'1-6' → '1-⑥', '6' → '⑥'; the seed's own circled form is returned as it is."""
    head, _, tail = num.rpartition("-")
    if tail.isascii() and tail.isdigit() and 1 <= int(tail) <= len(CIRCLED):
        tail = CIRCLED[int(tail) - 1]
    return f"{head}-{tail}" if head else tail


#: The package directory holding the catalog files (package data, listed in pyproject.toml).
DATA_PACKAGE_DIR = "catalog_data"


def default_directory() -> Path:
    """$JGW_CATALOG, else the catalog shipped inside the package."""
    env = os.environ.get("JGW_CATALOG")
    if env:
        return Path(env)
    shipped = resources.files("gateway") / DATA_PACKAGE_DIR
    if isinstance(shipped, Path):
        return shipped
    # a zipped package (zipimport): the loader reads directories, so hand it a real one
    raise ConfigError(str(shipped), "", "the catalog is inside a zipped package; install jgw unpacked "
                                        "(pip install) or set JGW_CATALOG to a catalog directory")


@lru_cache(maxsize=4)
def _load_cached(directory: Path) -> Catalog:
    return load(directory)


def default_catalog() -> Catalog:
    return _load_cached(default_directory())


def load(directory: str | Path) -> Catalog:
    """Read and validate every catalog file. Raises ConfigError naming file, key and reason."""
    directory = Path(directory)
    nodes_file = directory / "nodes.toml"
    nodes_opt = _read(nodes_file).table("nodes")
    nodes: dict[str, Node] = {}
    for node_id, opt in nodes_opt.tables():
        if not _DOC_ID.match(node_id):
            raise opt.error("", "node ids are lower-case words joined by '-'")
        nodes[node_id] = Node(id=node_id, name=opt.str("name"), kind=opt.str("kind", choices=NODE_KINDS),
                              site=opt.str("site"), aliases=tuple(_strings(opt, "aliases")),
                              note=opt.str("note", ""))
        opt.done()
    documents: list[Document] = []
    flows: dict[str, Flow] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == "nodes.toml":
            continue
        doc = _load_document(path, nodes)
        if any(d.id == doc.id for d in documents):
            raise ConfigError(str(path), "document.id", f"duplicate document id {doc.id!r}")
        documents.append(doc)
        flows.update((f.ref, f) for f in doc.flows)
    if not documents:
        raise ConfigError(str(directory), "", "no seed document files (*.toml besides nodes.toml)")
    documents.sort(key=lambda doc: doc.order)
    cat = Catalog(directory=directory, nodes=nodes, documents=tuple(documents), flows=flows)
    _check_references(cat)
    return cat


def _read(path: Path) -> Options:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        where = ("$JGW_CATALOG names this directory" if os.environ.get("JGW_CATALOG")
                 else "the installed package is incomplete: reinstall jgw")
        raise ConfigError(str(path), "", f"catalog file not found ({where})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"TOML syntax error: {exc}") from exc
    return Options(str(path), "", data, path.parent)


def _strings(opt: Options, name: str) -> list[str]:
    values = opt.list(name, [])
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise opt.error(f"{name}[{i}]", "expected a string")
    return list(values)


def _load_document(path: Path, nodes: Mapping[str, Node]) -> Document:
    top = _read(path)
    d = top.table("document")
    doc_id = d.str("id", pattern=_DOC_ID)
    order = d.int("order", min=1)
    numbering = d.str("numbering", choices=("sectioned", "plain"))
    linkage = d.str("linkage", choices=("yes", "none"))
    linkage_basis = d.str("linkage_basis", "")
    if linkage == "none" and not linkage_basis:
        raise d.error("linkage_basis", "say where the seed says there is no linkage")
    sections_opt = d.table("sections", {})
    sections = {k: sections_opt.str(k) for k in list(sections_opt._table)}
    sections_opt.done()
    doc_title, subject, start = d.str("title"), d.str("subject"), d.str("seed_start")
    d.done()
    flows: list[Flow] = []
    pattern = _SECTIONED if numbering == "sectioned" else _PLAIN
    for i, raw in enumerate(top.list("flow")):
        flow = _load_flow(Options(str(path), f"flow[{i}]", raw, path.parent), doc_id, pattern, nodes)
        if any(f.ref == flow.ref for f in flows):
            raise ConfigError(str(path), f"flow[{i}].ref", f"duplicate reference {flow.number}")
        if numbering == "sectioned" and flow.number.split("-")[0] not in sections:
            raise ConfigError(str(path), f"flow[{i}].ref", f"section {flow.number.split('-')[0]} is not in "
                                                           "[document.sections]")
        flows.append(flow)
    top.done()
    return Document(id=doc_id, title=doc_title, subject=subject, seed_start=start, order=order,
                    numbering=numbering,
                    linkage=linkage, linkage_basis=linkage_basis, sections=sections, flows=tuple(flows),
                    file=path)


def _load_leg(opt: Options, nodes: Mapping[str, Node]) -> Leg:
    ends = []
    for key in ("from", "to"):
        node = opt.str(key)
        if node not in nodes:
            raise opt.error(key, f"unknown node {node!r} (see nodes.toml)")
        ends.append(node)
    encoding = opt.str("encoding", "unknown")
    if encoding != "unknown":
        try:
            canonical_encoding(encoding)
        except EncodingError as exc:
            raise opt.error("encoding", exc.message) from exc
    leg = Leg(source=ends[0], target=ends[1], network=opt.str("network", choices=NETWORKS),
              personal_number=opt.str("personal_number", choices=("allowed", "forbidden")),
              basis=opt.str("basis"), encoding=None if encoding == "unknown" else encoding,
              encoding_basis=opt.str("encoding_basis", ""))
    if not leg.basis.strip():
        raise opt.error("basis", "say why the flow may or may not carry the 個人番号")
    return leg


def _load_flow(opt: Options, doc_id: str, pattern: re.Pattern[str], nodes: Mapping[str, Node]) -> Flow:
    number = opt.str("ref", pattern=pattern)
    kind = opt.str("kind", choices=KINDS)
    legs: list[Leg] = []
    if opt.has("leg"):
        for j, raw in enumerate(opt.list("leg")):
            leg_opt = Options(opt.file, f"{opt.path}.leg[{j}]", raw, opt.base_dir)
            legs.append(_load_leg(leg_opt, nodes))
            leg_opt.done()
        for key in ("from", "to", "network", "personal_number", "basis", "encoding", "encoding_basis"):
            if opt.has(key):
                raise opt.error(key, "a flow with [[flow.leg]] tables sets this on each leg")
        pn = "forbidden" if any(leg.personal_number == "forbidden" for leg in legs) else "allowed"
        basis = "strictest of its legs"
    elif kind == "message" or opt.has("from"):
        if kind == "message":
            legs.append(_load_leg(opt, nodes))
            pn, basis = legs[0].personal_number, legs[0].basis
        else:
            for key in ("from", "to"):
                if opt.str(key) not in nodes:
                    raise opt.error(key, f"unknown node {opt.str(key)!r} (see nodes.toml)")
            opt.str("network", choices=NETWORKS)
            pn = opt.str("personal_number", choices=("allowed", "forbidden"))
            basis = opt.str("basis")
    else:
        pn = opt.str("personal_number", choices=("allowed", "forbidden"))
        basis = opt.str("basis")
    if kind == "message" and not legs:
        raise opt.error("leg", "a message flow needs from/to or [[flow.leg]] tables")
    if kind != "message" and legs and opt.has("leg"):
        raise opt.error("leg", "only message flows have legs")
    flow = Flow(ref=f"{doc_id}:{number}", document=doc_id, number=number, name=opt.str("name"),
                text=opt.str("text"), kind=kind, legs=tuple(legs) if kind == "message" else (),
                personal_number=pn, basis=basis, ordering=opt.str("ordering", "none", choices=ORDERINGS),
                reply=_qualify(opt.str("reply", None), doc_id),
                reply_to=_qualify(opt.str("reply_to", None), doc_id),
                correlation=opt.str("correlation", None, choices=("keep",)),
                same_as=_qualify(opt.str("same_as", None), doc_id),
                see=tuple(_qualify(s, doc_id) or s for s in _strings(opt, "see")), note=opt.str("note", ""))
    opt.done()
    return flow


def _qualify(ref: str | None, doc_id: str) -> str | None:
    if ref is None:
        return None
    return ref if ":" in ref else f"{doc_id}:{ref}"


def _check_references(cat: Catalog) -> None:
    for flow in cat:
        doc = cat.document(flow.document)
        assert doc is not None
        for key, target in (("reply", flow.reply), ("reply_to", flow.reply_to), ("same_as", flow.same_as),
                            *(("see", s) for s in flow.see)):
            if target is not None and target not in cat.flows:
                raise ConfigError(str(doc.file), f"{flow.number}.{key}", f"no flow {target!r} in the catalog")
        if (flow.reply or flow.reply_to) and flow.correlation != "keep":
            raise ConfigError(str(doc.file), f"{flow.number}.correlation",
                              'a request/response flow keeps its correlation id: set correlation = "keep"')
        if flow.reply is not None and cat.flows[flow.reply].reply_to != flow.ref:
            raise ConfigError(str(doc.file), f"{flow.number}.reply",
                              f"{flow.reply} must name {flow.ref} as its reply_to")


# --- judging config routes ---------------------------------------------------------------------

class RouteTerms(Protocol):
    """What the catalog judges of a configured route (``gateway.config.RouteConfig`` has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def seed(self) -> str | None: ...
    @property
    def personal_number(self) -> str: ...
    @property
    def ordering_header(self) -> str | None: ...
    @property
    def payload_encoding(self) -> str | None: ...


def check_route(route: RouteTerms, catalog: Catalog | None = None) -> str | None:
    """Why ``route`` may not exist given the seed flow it names, or None when it may."""
    if route.seed is None:
        return None
    cat = catalog or default_catalog()
    try:
        flow, leg = cat.lookup(route.seed)
    except ValueError as exc:
        return str(exc)
    doc = cat.document(flow.document)
    assert doc is not None
    if doc.linkage == "none":
        return (f"seed flow {flow.ref} ({flow.name}) belongs to {doc.title}, which has no data linkage "
                f"({doc.linkage_basis}): no route may carry it")
    if not flow.is_route:
        what = {"manual": "a counter or paper step", "internal": "processing inside one system",
                "summary": "an overview item", "no-linkage": "a step with no data linkage"}[flow.kind]
        hint = f"; name the detailed flow instead ({', '.join(flow.see)})" if flow.see else ""
        return f"seed flow {flow.ref} ({flow.name}) is {what}, not a message flow{hint}"
    required = leg.personal_number if leg is not None else flow.personal_number
    if route.personal_number == "allowed" and required == "forbidden":
        which = f"leg {leg.source} → {leg.target} of {flow.ref}" if leg is not None else f"flow {flow.ref}"
        basis = leg.basis if leg is not None else _strictest_basis(flow)
        return (f"personal_number is 'allowed' but the catalog says {which} must not carry the 個人番号 "
                f"({basis}); set personal_number = \"forbidden\"")
    return None


def _strictest_basis(flow: Flow) -> str:
    forbidden = [leg for leg in flow.legs if leg.personal_number == "forbidden"]
    if not forbidden:
        return flow.basis
    names = ", ".join(f"leg {flow.legs.index(leg) + 1}" for leg in forbidden)
    return f"{names}: {forbidden[0].basis}; name one leg with /N"


def advise_route(route: RouteTerms, catalog: Catalog | None = None) -> list[str]:
    """Non-fatal advice on a route that ``check_route`` accepts (empty when nothing to say)."""
    if route.seed is None or check_route(route, catalog) is not None:
        return []
    cat = catalog or default_catalog()
    flow, leg = cat.lookup(route.seed)
    legs = [leg] if leg is not None else list(flow.legs)
    out = []
    if flow.ordering == "person" and route.ordering_header is None:
        out.append(f"route {route.name}: seed flow {flow.ref} must keep 異動 order per person; set "
                   "[routes.NAME.ordering] header")
    foreign = [x for x in legs if x.network in FOREIGN_NETWORKS]
    if foreign and len(foreign) == len(legs):
        out.append(f"route {route.name}: seed flow {flow.ref} runs on {foreign[0].network}, which jgw does "
                   "not normally carry (J-LIS / national protocol)")
    wanted = {x.encoding for x in legs if x.encoding}
    if route.personal_number == "forbidden" and wanted and route.payload_encoding not in wanted:
        out.append(f"route {route.name}: the catalog assumes payload encoding {', '.join(sorted(wanted))} "
                   f"for {flow.ref}; the route declares {route.payload_encoding!r}")
    return out


def describe_flow(flow: Flow) -> dict[str, Any]:
    """One flow as plain data (for ``jgw routes --catalog --json``)."""
    return {"ref": flow.ref, "name": flow.name, "kind": flow.kind, "personal_number": flow.personal_number,
            "ordering": flow.ordering, "reply": flow.reply, "reply_to": flow.reply_to,
            "correlation": flow.correlation,
            "legs": [{"from": x.source, "to": x.target, "network": x.network,
                      "personal_number": x.personal_number, "encoding": x.encoding or "unknown"}
                     for x in flow.legs]}
