"""The registry's write side (``python -m model publish | promote | clear | rollback | status``).

The format and the stores are the shipped core's (consumers/core/registry.py, consumers/aws/registry_s3.py):
consumers only read them. Here: publishing a verified bundle under its version, and every alias change as a
conditional write of the alias document read just before, so two people promoting at once cannot both win
(the second is refused and told who changed it; nothing is written; docs/rollout.md).

Each step is checked before anything is written: a version must verify from the registry itself before an
alias names it, and a shadow, a canary or a new live version must have the live model's feature schema
(running consumers refuse any other; ``--allow-schema-change`` for a live version when new containers are
meant to start with it).
"""

from __future__ import annotations

import getpass
import json
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.core.bundle import BUNDLE_FILES, CARD_FILE, ModelBundle, load_bundle
from consumers.core.registry import (
    ALIASES_FILE,
    Aliases,
    Conflict,
    Missing,
    RegistryError,
    RegistryStore,
    check_version,
    read_aliases,
)

PUBLISH_RETRIES = 5  # a publish only appends to the history, so a lost race is simply tried again


@dataclass
class Registry:
    """One model's registry, with the S3 client (if any) its bundles are read with."""

    store: RegistryStore
    s3: Any = None
    by: str = ""

    def load(self, version: str) -> ModelBundle:
        """The version, downloaded and verified from the registry (a fresh cache: no stale local copy)."""
        with tempfile.TemporaryDirectory(prefix="registry-") as cache:
            return load_bundle(self.store.bundle_uri(version), s3_client=self.s3, cache_dir=cache)

    def read(self) -> tuple[Aliases, str]:
        got = read_aliases(self.store)
        assert got is not None
        return got

    def write(self, current: Aliases, etag: str, new: Aliases) -> Aliases:
        """``new`` if the document is still ``etag``; ``Conflict`` naming the change that won otherwise."""
        try:
            self.store.put(ALIASES_FILE, new.to_json(), expect=etag or None)
        except Conflict:
            latest, _ = self.read()
            raise Conflict(
                f"the aliases of {self.store.uri} changed while this command ran (now generation "
                f"{latest.generation}, by {latest.updated_by or '?'} at {latest.updated_at or '?'}); nothing "
                "was written: look at `python -m model status` and run the command again"
            ) from None
        return new


def default_user() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return "unknown"


# --- publish ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    version: str
    uri: str
    already: bool  # the registry had this version (same model and schema): nothing uploaded


def publish(reg: Registry, bundle_dir: str | Path) -> Published:
    """Verify the bundle, upload its files under ``<version>/`` (each only if absent; the card last, so a
    version with a card is complete), verify the registry's copy, record the step in the history.

    A version that exists is left as it is when its model and schema are these bytes (the card, which only
    describes, is kept); a version whose files differ is refused: the registry's copy is not what its name
    says (corrupt or tampered), and publishing never overwrites."""
    bundle = load_bundle(str(bundle_dir))
    version = check_version(bundle.version)
    already = True
    for name in BUNDLE_FILES:  # model.ubj, features.json, card.json: the card last
        data = (Path(bundle_dir) / name).read_bytes()
        key = f"{version}/{name}"
        try:
            reg.store.put(key, data, expect=None)
            already = False
        except Conflict:
            existing = reg.store.get(key)
            assert existing is not None
            if name != CARD_FILE and existing.data != data:
                raise RegistryError(
                    f"registry {reg.store.uri}: version {version} exists with a different {name}; "
                    "refusing to publish over it (the registry's copy is not what its version says)"
                ) from None
    uri = reg.store.bundle_uri(version)
    reg.load(version)  # the copy in the registry verifies, or this raises before the history says so
    for _ in range(PUBLISH_RETRIES):
        aliases, etag = reg.read()
        entry = {"version": version, "holdout_auc": bundle.card.get("holdout_auc"), "already": already}
        try:
            reg.write(aliases, etag, aliases.changed(reg.by, "publish", **entry))
            break
        except Conflict:
            continue
    return Published(version, uri, already)


# --- alias changes ------------------------------------------------------------------------------------------
def _same_schema(reg: Registry, bundle: ModelBundle, live: str | None, what: str) -> None:
    if live is None or live == bundle.version:
        return
    current = reg.load(live)
    if current.schema != bundle.schema:
        raise RegistryError(
            f"{bundle.version} has another feature schema than the live version {live} ({what}): running "
            "consumers refuse it; a schema change is a new deployment (docs/rollout.md)"
        )


def promote(
    reg: Registry,
    version: str,
    alias: str,
    *,
    percent: float | None = None,
    allow_schema_change: bool = False,
) -> Aliases:
    """Point ``alias`` at ``version``. Live: a canary or shadow of the same version graduates (cleared).
    Canary: ``percent`` of events (0 < p <= 100) by a stable hash of the event id."""
    check_version(version)
    if alias not in ("live", "shadow", "canary"):
        raise RegistryError(f"alias must be live, shadow or canary, got {alias!r}")
    if alias == "canary" and (percent is None or not 0 < percent <= 100):
        raise RegistryError("a canary needs --percent N with 0 < N <= 100")
    if alias != "canary" and percent is not None:
        raise RegistryError("--percent is for --alias canary only")
    bundle = reg.load(version)  # exists in the registry and verifies
    aliases, etag = reg.read()
    if alias == "live":
        if not allow_schema_change:
            _same_schema(reg, bundle, aliases.live, "use --allow-schema-change to make it live anyway")
        change: dict[str, Any] = {"live": version}
        if aliases.canary == version:
            change.update(canary=None, canary_percent=0.0)
        if aliases.shadow == version:
            change["shadow"] = None
    else:
        if aliases.live is None:
            raise RegistryError(f"registry {reg.store.uri} has no live version to {alias} against yet")
        if version == aliases.live:
            raise RegistryError(f"{version} is the live version already")
        _same_schema(reg, bundle, aliases.live, "every model of a batch scores one matrix")
        change = {"shadow": version} if alias == "shadow" else {"canary": version, "canary_percent": percent}
    return reg.write(
        aliases, etag, aliases.changed(reg.by, "promote", alias=alias, version=version, **change)
    )


def clear(reg: Registry, alias: str) -> Aliases:
    """Unset the shadow or the canary."""
    if alias not in ("shadow", "canary"):
        raise RegistryError(
            "only --alias shadow or canary can be cleared (live is changed by promote/rollback)"
        )
    aliases, etag = reg.read()
    if getattr(aliases, alias) is None:
        raise RegistryError(f"no {alias} is set")
    change: dict[str, Any] = (
        {"shadow": None} if alias == "shadow" else {"canary": None, "canary_percent": 0.0}
    )
    return reg.write(aliases, etag, aliases.changed(reg.by, "clear", alias=alias, **change))


def rollback(reg: Registry, *, to: str | None = None) -> Aliases:
    """Live back to the version before it (recorded in the history), or to ``to``; the canary is cleared
    (a rollback is a decision against the new model)."""
    aliases, etag = reg.read()
    if aliases.live is None:
        raise RegistryError(f"registry {reg.store.uri} has no live version")
    if to is None:
        previous = aliases.previous_lives()
        if not previous:
            raise RegistryError(f"the history of {reg.store.uri} has no earlier live version to go back to")
        to = previous[0]
    check_version(to)
    if to == aliases.live:
        raise RegistryError(f"{to} is the live version already")
    reg.load(to)
    change: dict[str, Any] = {"live": to, "canary": None, "canary_percent": 0.0}
    if aliases.shadow == to:
        change["shadow"] = None
    return reg.write(aliases, etag, aliases.changed(reg.by, "rollback", alias="live", version=to, **change))


# --- status -------------------------------------------------------------------------------------------------
def status(reg: Registry, *, history: int = 20) -> dict[str, Any]:
    """Aliases, published versions (from their cards) and the latest changes."""
    aliases, _ = reg.read()
    versions = []
    for v in reg.store.versions():
        try:
            got = reg.store.get(f"{v}/{CARD_FILE}")
        except Missing:
            versions.append({"version": v, "complete": False})
            continue
        card = json.loads(got.data) if got is not None else {}
        versions.append(
            {
                "version": v,
                "complete": True,
                "created_at": card.get("created_at"),
                "holdout_auc": card.get("holdout_auc"),
                "threshold": card.get("threshold"),
                "aliases": [a for a, x in aliases.versions().items() if x == v],
            }
        )
    return {
        "registry": reg.store.uri,
        "live": aliases.live,
        "shadow": aliases.shadow,
        "canary": aliases.canary,
        "canary_percent": aliases.canary_percent,
        "generation": aliases.generation,
        "updated_at": aliases.updated_at,
        "updated_by": aliases.updated_by,
        "versions": versions,
        "history": list(aliases.history[-history:]),
    }


def render_status(doc: dict[str, Any]) -> str:
    """``status`` for a person: the aliases, a table of versions, the latest changes."""
    canary = f"{doc['canary']} ({doc['canary_percent']:g}%)" if doc["canary"] else "-"
    lines = [
        f"registry   {doc['registry']}   (generation {doc['generation']}, "
        f"{doc['updated_at'] or 'never'} by {doc['updated_by'] or '-'})",
        f"live       {doc['live'] or '-'}",
        f"shadow     {doc['shadow'] or '-'}",
        f"canary     {canary}",
        "",
        f"{'version':<18}{'created':<22}{'auc':>8}{'threshold':>11}  aliases",
    ]
    for v in doc["versions"]:
        if not v["complete"]:
            lines.append(f"{v['version']:<18}(incomplete: no card.json)")
            continue
        auc = f"{v['holdout_auc']:.4f}" if isinstance(v["holdout_auc"], float) else "-"
        thr = f"{v['threshold']:g}" if isinstance(v["threshold"], float) else "-"
        lines.append(
            f"{v['version']:<18}{v['created_at'] or '-':<22}{auc:>8}{thr:>11}  {','.join(v['aliases'])}"
        )
    lines += ["", "history (newest last):"]
    for h in doc["history"]:
        what = {k: v for k, v in h.items() if k not in ("generation", "at", "by", "action")}
        detail = " ".join(f"{k}={v}" for k, v in what.items())
        lines.append(f"  #{h.get('generation')} {h.get('at')} {h.get('by')}: {h.get('action')} {detail}")
    return "\n".join(lines)
