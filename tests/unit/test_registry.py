"""The registry's format and its write side on a local store: conditional writes that cannot lose an update,
publish that never overwrites, promote/clear/rollback and their history (consumers/core/registry.py,
model/registry.py). The S3 store is tested against moto in tests/integration/test_rollout_moto.py."""

from __future__ import annotations

import shutil
import threading

import pytest

from consumers.core.errors import ModelError
from consumers.core.registry import (
    ALIASES_FILE,
    AliasDocError,
    Aliases,
    Conflict,
    LocalStore,
    RegistryError,
    parse_model_uri,
    read_aliases,
)
from model import DEFAULT_BUNDLE_DIR
from model import registry as ops
from model.registry import Registry

V1 = "42829e09ae9928ec"  # the default bundle


@pytest.fixture
def reg(tmp_path):
    r = Registry(LocalStore(tmp_path / "registry"), by="tester")
    ops.publish(r, DEFAULT_BUNDLE_DIR)
    ops.promote(r, V1, "live")
    return r


def test_model_uri_names_the_live_alias_only():
    assert parse_model_uri("s3://b/models/fraud@live").root == "s3://b/models/fraud"
    assert parse_model_uri("/srv/registry/fraud/@live").root == "/srv/registry/fraud"
    assert parse_model_uri("model/bundles/default") is None
    assert parse_model_uri("/tmp/a@b/bundle") is None  # an @ inside a directory name is not an alias
    with pytest.raises(RegistryError, match="follows the registry's live alias"):
        parse_model_uri("s3://b/models/fraud@canary")
    with pytest.raises(RegistryError, match="empty"):
        parse_model_uri("@live")


@pytest.mark.parametrize(
    "doc, message",
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"format": 2}', "format is 2"),
        (b'{"format": 1, "live": "nothex"}', "16 hex digits"),
        (b'{"format": 1, "canary": "42829e09ae9928ec"}', "needs a percentage"),
        (b'{"format": 1, "canary_percent": 5}', "needs a percentage above 0, and a percentage needs"),
        (b'{"format": 1, "canary": "42829e09ae9928ec", "canary_percent": 101}', "0..100"),
        (b'{"format": 1, "history": {}}', "history must be a list"),
    ],
)
def test_an_invalid_alias_document_says_which_field(doc, message):
    with pytest.raises(AliasDocError, match=message):
        Aliases.from_json(doc)


def test_document_round_trips_and_records_who_when_what(reg):
    aliases, _ = reg.read()
    assert Aliases.from_json(aliases.to_json()) == aliases
    assert aliases.live == V1 and aliases.generation == 2
    assert [h["action"] for h in aliases.history] == ["publish", "promote"]
    assert all(h["by"] == "tester" and h["at"].endswith("Z") for h in aliases.history)


def test_a_stale_write_is_refused_and_writes_nothing(reg, second_bundle):
    # GIVEN two people who read the aliases at the same generation
    v2 = ops.publish(reg, second_bundle[0]).version
    a, etag = reg.read()
    b, same_etag = reg.read()
    assert etag == same_etag
    # WHEN the first writes, then the second writes on what it read
    reg.write(a, etag, a.changed("alice", "promote", alias="shadow", shadow=v2))
    with pytest.raises(Conflict, match=r"changed while this command ran \(now generation 4, by alice"):
        reg.write(b, same_etag, b.changed("bob", "promote", alias="live", live=v2))
    # THEN the first change stands and the second left no trace
    now, _ = reg.read()
    assert now.shadow == v2 and now.live == V1 and now.history[-1]["by"] == "alice"


def test_concurrent_promotes_lose_no_update(reg, second_bundle):
    # GIVEN 8 writers racing, each appending one change to the document it read
    store = reg.store
    start = threading.Barrier(8)
    won: list[str] = []

    def writer(name: str) -> None:
        start.wait()
        for _ in range(50):
            got = read_aliases(store)
            assert got is not None
            doc, etag = got
            try:
                store.put(ALIASES_FILE, doc.changed(name, "note").to_json(), expect=etag)
            except Conflict:
                continue
            won.append(name)
            return

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # THEN every write that was told it won is in the history, once, and the generation counts them
    doc, _ = reg.read()
    notes = [h["by"] for h in doc.history if h["action"] == "note"]
    assert sorted(notes) == sorted(won) and len(won) == 8
    assert doc.generation == 2 + len(won)


def test_publish_is_idempotent_and_never_overwrites_other_content(reg, tmp_path):
    again = ops.publish(reg, DEFAULT_BUNDLE_DIR)
    assert again.already and again.version == V1
    # a registry copy whose schema bytes differ from the version's is refused, not replaced
    target = reg.store.root / V1 / "features.json"
    target.write_bytes(target.read_bytes().replace(b'"name"', b' "name"', 1))
    with pytest.raises(RegistryError, match="exists with a different features.json"):
        ops.publish(reg, DEFAULT_BUNDLE_DIR)


def test_publish_refuses_a_bundle_that_does_not_verify(reg, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(DEFAULT_BUNDLE_DIR, bad)
    model = bad / "model.ubj"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt or tampered"):
        ops.publish(reg, bad)
    assert reg.store.versions() == [V1]


def test_shadow_canary_promote_rollback_flow(reg, second_bundle):
    v2 = ops.publish(reg, second_bundle[0]).version
    assert ops.promote(reg, v2, "shadow").shadow == v2
    canary = ops.promote(reg, v2, "canary", percent=20)
    assert (canary.canary, canary.canary_percent, canary.shadow) == (v2, 20, v2)
    live = ops.promote(reg, v2, "live")
    assert (live.live, live.canary, live.shadow, live.canary_percent) == (v2, None, None, 0)  # graduated
    back = ops.rollback(reg)
    assert back.live == V1 and back.history[-1]["action"] == "rollback"
    assert back.history[-1]["previous_live"] == v2
    # a second rollback goes further back, not forward to the version just rolled back from
    with pytest.raises(RegistryError, match="no earlier live version"):
        ops.rollback(reg)


@pytest.mark.parametrize(
    "alias, percent, message",
    [
        ("canary", None, "needs --percent"),
        ("canary", 0, "needs --percent"),
        ("canary", 150, "needs --percent"),
        ("shadow", 5, "for --alias canary only"),
        ("stable", None, "must be live, shadow or canary"),
    ],
)
def test_promote_refuses_bad_requests(reg, second_bundle, alias, percent, message):
    v2 = ops.publish(reg, second_bundle[0]).version
    with pytest.raises(RegistryError, match=message):
        ops.promote(reg, v2, alias, percent=percent)


def test_promote_refuses_what_consumers_would_refuse(reg):
    with pytest.raises(RegistryError, match="live version already"):
        ops.promote(reg, V1, "shadow")
    with pytest.raises(ModelError, match="does not exist"):
        ops.promote(reg, "ffffffffffffffff", "live")
    with pytest.raises(RegistryError, match="no shadow is set"):
        ops.clear(reg, "shadow")


def test_promote_refuses_another_schema_unless_told(reg, tmp_path):
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH
    from model.train import train

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    doc = schema.to_json()
    doc["name"] = doc["name"] + "-v2"  # another schema (its name is part of the contract)
    other = FeatureSchema.from_dict(doc, source="test")
    card = train(other, rows=2000, trees=5, depth=3, seed=3, out_dir=tmp_path / "other")
    ops.publish(reg, tmp_path / "other")
    for alias in ("shadow", "live"):
        with pytest.raises(RegistryError, match="another feature schema"):
            ops.promote(reg, card["version"], alias)
    assert ops.promote(reg, card["version"], "live", allow_schema_change=True).live == card["version"]


def test_status_lists_aliases_versions_and_history(reg, second_bundle):
    v2 = ops.publish(reg, second_bundle[0]).version
    ops.promote(reg, v2, "canary", percent=5)
    doc = ops.status(reg)
    assert (doc["live"], doc["canary"], doc["canary_percent"]) == (V1, v2, 5)
    by_version = {v["version"]: v for v in doc["versions"]}
    assert by_version[V1]["aliases"] == ["live"] and by_version[v2]["aliases"] == ["canary"]
    text = ops.render_status(doc)
    assert f"canary     {v2} (5%)" in text and "promote" in text
