"""Hot rollout in one container (consumers/core/rollout.py) on a local registry with real bundles: when the
aliases are read, what is adopted and when, what is refused and what keeps serving, and the guardrail."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from consumers.core.bundle import load_bundle
from consumers.core.errors import ModelError, ModelUnavailable
from consumers.core.guardrail import GuardrailSettings
from consumers.core.registry import ALIASES_FILE, LocalStore, RegistryError
from consumers.core.rollout import Rollout
from consumers.core.scoring import BoosterScorer
from consumers.core.variants import BatchScores
from model import DEFAULT_BUNDLE_DIR
from model import registry as ops
from model.registry import Registry

V1 = "42829e09ae9928ec"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class CountingStore(LocalStore):
    """A local registry that counts reads and can be made unreachable (``down``)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.gets = 0
        self.down = False

    def get(self, key, *, etag=None):
        self.gets += 1
        if self.down:
            raise RegistryError(f"registry {self.uri}: cannot read {key}: connection refused")
        return super().get(key, etag=etag)


class Switch:
    """A real scorer whose predict can be made to fail after it was warmed and adopted."""

    def __init__(self, inner: BoosterScorer) -> None:
        self.inner, self.fail = inner, False
        self.version, self.schema, self.decisions = inner.version, inner.schema, inner.decisions

    def predict(self, matrix):
        if self.fail:
            raise RuntimeError("predict failed")
        return self.inner.predict(matrix)


@pytest.fixture
def world(tmp_path, second_bundle):
    store = CountingStore(tmp_path / "registry")
    reg = Registry(store, by="tester")
    ops.publish(reg, DEFAULT_BUNDLE_DIR)
    ops.promote(reg, V1, "live")
    v2 = ops.publish(reg, second_bundle[0]).version
    loads: list[str] = []
    scorers: dict[str, Switch] = {}

    def load(uri: str):
        loads.append(uri)
        scorer = Switch(BoosterScorer.from_bundle(load_bundle(uri)))
        scorers[scorer.version] = scorer
        return scorer

    clock = Clock()

    def start(**kw) -> Rollout:
        return Rollout(store, load, refresh_s=60, clock=clock, **kw)

    return {"store": store, "reg": reg, "v2": v2, "loads": loads, "clock": clock, "start": start,
            "scorers": scorers}  # fmt: skip


def kinds(rollout: Rollout) -> list[str]:
    return [e.kind for e in rollout.take_events()]


def test_aliases_are_read_at_most_every_refresh_interval_and_cost_nothing_unchanged(world):
    r = world["start"]()
    store, clock = world["store"], world["clock"]
    reads = store.gets
    r.refresh_if_due()
    assert store.gets == reads  # not due yet
    clock.t += 60
    r.refresh_if_due()
    r.refresh_if_due()
    assert store.gets == reads + 1 and r.unchanged == 1
    assert world["loads"] == [store.bundle_uri(V1)]  # nothing loaded again


def test_a_promotion_is_adopted_between_batches_only_after_it_loaded(world):
    r = world["start"]()
    before = r.current
    ops.promote(world["reg"], world["v2"], "live")
    assert r.current is before  # nothing changes until the next refresh
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.live.version == world["v2"] and before.live.version == V1
    (event,) = r.take_events()
    assert (event.kind, event.alias, event.version, event.details) == ("adopted", "live", world["v2"],
                                                                       {"previous": V1})  # fmt: skip


def test_shadow_and_canary_come_and_go_with_the_document(world):
    r = world["start"]()
    ops.promote(world["reg"], world["v2"], "shadow")
    ops.promote(world["reg"], world["v2"], "canary", percent=20)
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.describe() == {"live": V1, "shadow": world["v2"], "canary": world["v2"],
                                    "canary_percent": 20}  # fmt: skip
    ops.clear(world["reg"], "canary")
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.canary is None and r.current.shadow is not None
    assert kinds(r) == ["adopted", "adopted", "cleared"]
    assert len(world["loads"]) == 2  # v2 loaded once for both aliases


def corrupt_copy(world, version_dir_name: str) -> str:
    """A version directory whose model.ubj does not match its card (corrupt in storage)."""
    store = world["store"]
    target = store.root / version_dir_name
    shutil.copytree(store.root / world["v2"], target)
    data = bytearray((target / "model.ubj").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (target / "model.ubj").write_bytes(bytes(data))
    return version_dir_name


def point_live_at(world, version: str) -> None:
    """An alias change that bypasses the CLI's checks (a hand edit, or storage corruption)."""
    aliases, etag = world["reg"].read()
    world["store"].put(ALIASES_FILE, aliases.changed("hand", "edit", live=version).to_json(), expect=etag)


def test_a_corrupt_version_is_refused_once_and_the_old_one_keeps_serving(world):
    r = world["start"]()
    bad = corrupt_copy(world, "badbadbadbadbad0")
    point_live_at(world, bad)
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.live.version == V1
    (event,) = r.take_events()
    assert event.kind == "refused" and event.version == bad and "corrupt or tampered" in event.reason
    loads = len(world["loads"])
    aliases, etag = world["reg"].read()  # the document changes again, still naming it live
    world["store"].put(
        ALIASES_FILE, aliases.changed("hand", "edit", shadow=world["v2"]).to_json(), expect=etag
    )
    world["clock"].t += 60
    r.refresh_if_due()
    assert len(world["loads"]) == loads + 1  # the shadow loaded; the refused version was not tried again
    assert r.current.live.version == V1 and r.current.shadow.version == world["v2"]


def test_a_download_that_fails_is_tried_again_at_the_next_refresh(world):
    r = world["start"]()
    ops.promote(world["reg"], world["v2"], "live")
    real = r.load
    attempts = []

    def flaky(uri):
        attempts.append(uri)
        if len(attempts) == 1:
            raise ModelUnavailable(f"model bundle {uri}: cannot download: SlowDown")
        return real(uri)

    r.load = flaky
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.live.version == V1 and kinds(r) == ["refused"]
    world["clock"].t += 60
    r.refresh_if_due()  # the same document: read in full again, since it was not applied whole
    assert r.current.live.version == world["v2"] and kinds(r) == ["adopted"]


def test_an_unreachable_registry_or_a_broken_document_keeps_the_models(world):
    r = world["start"]()
    world["store"].down = True
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.live.version == V1
    (event,) = r.take_events()
    assert event.kind == "unreachable" and "connection refused" in event.reason
    world["store"].down = False
    (world["store"].root / ALIASES_FILE).write_bytes(b'{"format": 1, "live": "xyz"}')
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.live.version == V1 and kinds(r) == ["invalid"]


def test_a_version_with_another_schema_is_refused(world, tmp_path):
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH
    from model.train import train

    doc = FeatureSchema.load(DEFAULT_SCHEMA_PATH).to_json()
    doc["name"] += "-other"
    card = train(FeatureSchema.from_dict(doc, source="t"), rows=2000, trees=5, depth=3, seed=3,
                 out_dir=tmp_path / "o")  # fmt: skip
    ops.publish(world["reg"], tmp_path / "o")
    r = world["start"]()
    ops.promote(world["reg"], card["version"], "live", allow_schema_change=True)
    world["clock"].t += 60
    r.refresh_if_due()
    (event,) = r.take_events()
    assert event.kind == "refused" and "feature schema differs" in event.reason
    assert r.current.live.version == V1


def test_a_cold_start_serves_the_previous_live_when_the_current_one_is_refused(world):
    ops.promote(world["reg"], world["v2"], "live")
    bad = corrupt_copy(world, "badbadbadbadbad0")
    point_live_at(world, bad)
    r = world["start"]()
    assert r.current.live.version == world["v2"]
    assert kinds(r) == ["refused", "fallback"]


def test_a_registry_without_a_live_version_fails_the_cold_start(tmp_path):
    store = LocalStore(tmp_path / "empty")
    with pytest.raises(ModelError, match="no live version yet"):
        Rollout(store, lambda uri: None, refresh_s=60)  # type: ignore[arg-type,return-value]


def test_the_guardrail_returns_to_the_previous_live_model(world):
    r = world["start"](guardrail=GuardrailSettings(batches=4, max_error_rate=0.25))
    ops.promote(world["reg"], world["v2"], "live")
    world["clock"].t += 60
    r.refresh_if_due()
    r.take_events()
    world["scorers"][world["v2"]].fail = True
    r.observe(failed=True)  # 1 of 4: at the limit (1 = 0.25 x 4), not over it
    assert r.current.live.version == world["v2"]
    r.observe(failed=True)
    assert r.current.live.version == V1
    (event,) = r.take_events()
    assert (event.kind, event.alias, event.version) == ("tripped", "live", world["v2"])
    assert "2 of the last 2 batches failed" in event.reason
    # the alias still names it: a changed document does not bring it back
    aliases, etag = world["reg"].read()
    world["store"].put(ALIASES_FILE, aliases.changed("x", "note").to_json(), expect=etag)
    world["clock"].t += 60
    r.refresh_if_due()
    assert r.current.live.version == V1 and kinds(r) == []


def test_the_guardrail_drops_a_failing_canary(world):
    r = world["start"](guardrail=GuardrailSettings(batches=10, max_error_rate=0.2))
    ops.promote(world["reg"], world["v2"], "canary", percent=10)
    world["clock"].t += 60
    r.refresh_if_due()
    r.take_events()
    failed = BatchScores(np.zeros(3, np.float32), V1, None, np.zeros(3, bool), world["v2"],
                         canary_error="RuntimeError: boom")  # fmt: skip
    for _ in range(2):
        r.observe(failed=False, scores=failed)
    assert r.current.canary is not None  # 2 failures: at 0.2 x 10
    r.observe(failed=False, scores=failed)
    assert r.current.canary is None and [e.kind for e in r.take_events()] == ["tripped"]


def test_the_quarantine_check_needs_a_full_window(world):
    from consumers.core.guardrail import Watch

    w = Watch("v", "live", GuardrailSettings(batches=3, max_error_rate=1.0, max_quarantine_rate=0.5))
    assert w.observe(failed=False, records=10, quarantined=9) is None
    assert w.observe(failed=False, records=10, quarantined=9) is None
    trip = w.observe(failed=False, records=10, quarantined=9)
    assert trip is not None and "27 of 30 records quarantined" in trip.reason
    canary = Watch("v", "canary", GuardrailSettings(batches=1, max_error_rate=1.0, max_quarantine_rate=0.1))
    assert canary.observe(failed=False, records=10, quarantined=10) is None
