"""The model bundle: ``model.ubj`` + ``features.json`` + ``card.json`` in one directory, and its loading.

Format (one directory, local or under an S3 prefix)::

    model.ubj      the Booster in XGBoost's UBJSON format, with the schema's feature names inside
    features.json  the feature schema, canonical JSON (sorted keys, indent 2): the contract the consumer reads
    card.json      {"version": sha256(model.ubj)[:16], "model_sha256", "features_sha256", "features": [...],
                    "objective", "holdout_auc", "metrics", "xgboost_version", "created_at", "training",
                    "format": "ubj", ...}

The version is a content hash, so the same bytes always carry the same version and a score written
to DynamoDB names exactly the model that made it. It covers everything that changes a score: the trees, and
the feature schema the model was trained with (names, types, bounds, category order: the whole encoding, as
``features.json`` holds it), whose sha256 training records *inside* ``model.ubj`` (the Booster attribute
``TRAINED_SCHEMA_ATTR``). Loading verifies everything before the Booster is used: both hashes, that
``features.json`` is the schema the model was trained with (a ``card.json`` rewritten to match an edited
``features.json`` does not make it so), that the model file is XGBoost JSON/UBJSON (never a pickle:
unpickling runs code; docs/security.md and
https://xgboost.readthedocs.io/en/stable/tutorials/saving_model.html), and that the Booster's feature
names equal the schema's, in order (the consumer builds columns in schema order and ``inplace_predict``
on a numpy array cannot check names itself). Every failure is a ``ModelError`` whose message starts
``model bundle <uri>:`` and says what is wrong.

``s3://bucket/prefix`` bundles are downloaded once per container into ``cache_dir/<sha256(uri)>/``: a warm
cache that verifies is used as is, files are written under a temporary name and renamed (a crash never
leaves a half file that looks whole). The cache is keyed by URI, so publish each model under its own prefix
(e.g. ``s3://bucket/models/<version>/``) rather than overwriting one. The S3 client is injected (the core
never imports boto3); it only needs ``get_object``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xgboost as xgb

from consumers.core.decisions import BANDS_ATTR, CARD_KEY, BandsError, DecisionBands
from consumers.core.drift import REFERENCE_ATTR, Reference, ReferenceError
from consumers.core.errors import ModelError, ModelUnavailable, SchemaError
from consumers.core.schema import FeatureSchema

MODEL_FILE = "model.ubj"
FEATURES_FILE = "features.json"
CARD_FILE = "card.json"
BUNDLE_FILES = (MODEL_FILE, FEATURES_FILE, CARD_FILE)
CARD_KEYS = (
    "version",
    "model_sha256",
    "features_sha256",
    "features",
    "objective",
    "holdout_auc",
    "xgboost_version",
    "created_at",
    "training",
    "format",
)
TRAINED_SCHEMA_ATTR = "features_sha256"  # Booster attribute: sha256 of the features.json trained with
OBJECTIVE = "binary:logistic"  # the consumer stores the prediction as a probability
DEFAULT_CACHE_DIR = "/tmp/model-cache"  # /tmp is the only writable path on Lambda
VERSION_CHARS = 16
THRESHOLD_KEY = "threshold"  # card.json: the decision threshold (the lowest band cut), for people and tools
# Size caps, checked before a file is read or while it downloads: a bundle is input too, and an oversized
# (or endless) object must fail the cold start with a ModelError, not fill /tmp (512 MB by default) or memory.
# The default model (200 trees of depth 6) is ~0.5 MB and its schema and card ~5 KB each.
MAX_FILE_BYTES = {MODEL_FILE: 200 * 1024 * 1024, FEATURES_FILE: 1024 * 1024, CARD_FILE: 1024 * 1024}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def features_json_bytes(schema: FeatureSchema) -> bytes:
    """The canonical features.json: the same schema always gives the same bytes (and ``features_sha256``)."""
    return (json.dumps(schema.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _card_json_bytes(card: dict[str, Any]) -> bytes:
    return (json.dumps(card, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a temporary file in the same directory, then rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a bundle is read by other users and tools
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _objective(booster: xgb.Booster) -> str:
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- writing ------------------------------------------------------------------------------------
def write_bundle(
    out_dir: str | Path,
    booster: xgb.Booster,
    schema: FeatureSchema,
    *,
    metrics: dict[str, Any],
    training: dict[str, Any],
    decisions: DecisionBands | None = None,
    reference: Reference | None = None,
) -> dict[str, Any]:
    """Write the three files (card.json last: a directory with a card is complete) and return the card.

    ``metrics`` must contain ``holdout_auc``. ``model.ubj`` holds exactly ``booster.save_raw("ubj")``, the
    bytes ``booster.save_model("model.ubj")`` writes, hashed in memory and written atomically. ``decisions``
    (optional) are stored inside it too (``BANDS_ATTR``), so the version covers them, and copied to the card.
    """
    if booster.feature_names != schema.names:
        raise ModelError(
            f"model bundle {out_dir}: booster feature names do not match the schema "
            f"{schema.name!r}; train with feature_names=schema.names"
        )
    if "holdout_auc" not in metrics:
        raise ValueError("metrics must contain holdout_auc")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = features_json_bytes(schema)
    booster.set_attr(
        **{TRAINED_SCHEMA_ATTR: sha256_hex(features)}
    )  # saved inside model.ubj: the version covers it
    booster.set_attr(**{BANDS_ATTR: decisions.canonical() if decisions is not None else None})
    booster.set_attr(**{REFERENCE_ATTR: reference.canonical() if reference is not None else None})
    model = bytes(booster.save_raw(raw_format="ubj"))
    model_sha = sha256_hex(model)
    card: dict[str, Any] = {
        "version": model_sha[:VERSION_CHARS],
        "model_sha256": model_sha,
        "features_sha256": sha256_hex(features),
        "features": schema.names,
        "schema_name": schema.name,
        "objective": _objective(booster),
        "holdout_auc": metrics["holdout_auc"],
        "metrics": metrics,
        "xgboost_version": xgb.__version__,
        "created_at": _utc_now(),
        "training": training,
        "format": "ubj",
        "model_bytes": len(model),
    }
    if decisions is not None:
        card[CARD_KEY] = decisions.to_json()
        card[THRESHOLD_KEY] = decisions.thresholds[0]  # the cut a shadow's decision flips are counted at
    _atomic_write(out / MODEL_FILE, model)
    _atomic_write(out / FEATURES_FILE, features)
    _atomic_write(out / CARD_FILE, _card_json_bytes(card))
    return card


# --- loading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle. ``card`` is the parsed card.json (treat it as read-only)."""

    booster: xgb.Booster
    schema: FeatureSchema
    card: dict[str, Any]
    uri: str
    decisions: DecisionBands | None = None  # the model's decision bands, if it declares any
    reference: Reference | None = None  # the training distributions drift is measured against

    @property
    def version(self) -> str:
        return str(self.card["version"])


def _over_cap(name: str, size: int | str) -> str:
    cap = MAX_FILE_BYTES[name]
    return f"{name} is {size} bytes, over its cap of {cap} bytes (consumers/core/bundle.py MAX_FILE_BYTES)"


def _read_capped(path: Path, uri: str) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE_BYTES[path.name] + 1)  # never more than the cap, even if the file grows
    if len(data) > MAX_FILE_BYTES[path.name]:
        raise ModelError(
            f"model bundle {uri}: {_over_cap(path.name, f'more than {MAX_FILE_BYTES[path.name]}')}"
        )
    return data


def _read_verified(directory: Path, uri: str) -> tuple[dict[str, Any], bytes, bytes]:
    """card, model bytes, features bytes of a bundle directory whose hashes match its card."""

    def bad(msg: str) -> ModelError:
        return ModelError(f"model bundle {uri}: {msg}")

    if not directory.is_dir():
        raise bad(f"directory {directory} does not exist")
    missing = [name for name in BUNDLE_FILES if not (directory / name).is_file()]
    if missing:
        raise bad(f"missing {', '.join(missing)} in {directory}")
    try:
        card = json.loads(_read_capped(directory / CARD_FILE, uri))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise bad(f"{CARD_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(card, dict):
        raise bad(f"{CARD_FILE} must be a JSON object")
    lacking = [k for k in CARD_KEYS if k not in card]
    if lacking:
        raise bad(f"{CARD_FILE} lacks {', '.join(lacking)}")
    if card["format"] != "ubj":
        raise bad(f"{CARD_FILE} format is {card['format']!r}, expected 'ubj'")
    model = _read_capped(directory / MODEL_FILE, uri)
    got = sha256_hex(model)
    if got != card["model_sha256"]:
        raise bad(
            f"{MODEL_FILE} sha256 is {got} but {CARD_FILE} says {card['model_sha256']} (corrupt or tampered)"
        )
    if card["version"] != got[:VERSION_CHARS]:
        raise bad(
            f"{CARD_FILE} version {card['version']!r} is not sha256({MODEL_FILE})[:{VERSION_CHARS}] "
            f"{got[:VERSION_CHARS]!r}"
        )
    features = _read_capped(directory / FEATURES_FILE, uri)
    got = sha256_hex(features)
    if got != card["features_sha256"]:
        raise bad(
            f"{FEATURES_FILE} sha256 is {got} but {CARD_FILE} says {card['features_sha256']} "
            "(corrupt or tampered)"
        )
    return card, model, features


def _name_diff(got: Sequence[str] | None, want: Sequence[str]) -> str:
    if not got:
        return "the booster has no feature names (train with feature_names=schema.names)"
    if len(got) != len(want):
        return f"the booster has {len(got)} features, {FEATURES_FILE} has {len(want)}"
    i = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
    return f"feature {i} is {got[i]!r} in the booster but {want[i]!r} in {FEATURES_FILE}"


def _build(card: dict[str, Any], model: bytes, features: bytes, uri: str) -> ModelBundle:
    def bad(msg: str) -> ModelError:
        return ModelError(f"model bundle {uri}: {msg}")

    try:
        schema = FeatureSchema.from_dict(json.loads(features), source=f"{uri}/{FEATURES_FILE}")
    except ValueError as exc:
        raise SchemaError(f"model bundle {uri}: {FEATURES_FILE} is not valid JSON ({exc})") from exc
    except SchemaError as exc:
        raise SchemaError(f"model bundle {uri}: {exc}") from exc
    if card["features"] != schema.names:
        raise bad(
            f"{CARD_FILE} features differ from {FEATURES_FILE}: {_name_diff(card['features'], schema.names)}"
        )
    # Refuse anything but XGBoost JSON/UBJSON before xgboost sees it: both start with '{' (a UBJSON object).
    # A pickle starts with 0x80 and loading one runs arbitrary code.
    if not model:
        raise bad(f"{MODEL_FILE} is empty")
    if model[:1] != b"{":
        hint = " (a Python pickle)" if model[:1] == b"\x80" else ""
        raise bad(
            f"{MODEL_FILE} is not an XGBoost UBJSON or JSON model: first byte 0x{model[0]:02x}{hint}; "
            "refusing to load it"
        )
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(model))
        objective = _objective(booster)
    except xgb.core.XGBoostError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise bad(f"xgboost cannot load {MODEL_FILE}: {first_line}") from exc
    if booster.feature_names != schema.names:
        raise bad(f"feature names differ: {_name_diff(booster.feature_names, schema.names)}")
    trained_with = booster.attr(TRAINED_SCHEMA_ATTR)
    if trained_with is None:
        raise bad(
            f"{MODEL_FILE} does not record the feature schema it was trained with, so {FEATURES_FILE} "
            "cannot be checked against it; retrain the bundle with this version "
            "(python -m model train --out DIR)"
        )
    if trained_with != sha256_hex(features):
        raise bad(
            f"{FEATURES_FILE} is not the schema {MODEL_FILE} was trained with (sha256 "
            f"{sha256_hex(features)}, trained with {trained_with}): its names, types, bounds or category "
            "order changed, which changes scores; restore it or retrain"
        )
    if objective != OBJECTIVE or card["objective"] != objective:
        raise bad(
            f"objective is {objective!r} in {MODEL_FILE} and {card['objective']!r} in {CARD_FILE}; "
            f"the consumer needs {OBJECTIVE!r} probabilities"
        )
    decisions = _decisions(booster, card, bad)
    reference = None
    if (stored := booster.attr(REFERENCE_ATTR)) is not None:
        try:
            reference = Reference.from_json(json.loads(stored), schema.names)
        except (ValueError, ReferenceError) as exc:
            raise bad(f"{MODEL_FILE} carries an invalid drift reference: {exc}") from exc
    # By default a Booster predicts on every visible core; on one vCPU two threads double small-batch
    # latency (benchmarks/results/REPORT.md).
    booster.set_param({"nthread": 1})
    return ModelBundle(
        booster=booster, schema=schema, card=card, uri=uri, decisions=decisions, reference=reference
    )


def _decisions(booster: xgb.Booster, card: dict[str, Any], bad: Any) -> DecisionBands | None:
    """The bands inside model.ubj (covered by the version), which the card's copy must equal."""
    stored, shown = booster.attr(BANDS_ATTR), card.get(CARD_KEY)
    if stored is None:
        if shown is not None:
            raise bad(f"{CARD_FILE} declares decision bands that {MODEL_FILE} does not carry (edited card?)")
        return None
    try:
        bands = DecisionBands.from_json(json.loads(stored))
    except (ValueError, BandsError) as exc:
        raise bad(f"{MODEL_FILE} carries invalid decision bands: {exc}") from exc
    if THRESHOLD_KEY in card and card[THRESHOLD_KEY] != bands.thresholds[0]:
        raise bad(f"{CARD_FILE} threshold {card[THRESHOLD_KEY]!r} is not the lowest band cut of {bands}")
    if shown != bands.to_json():
        raise bad(
            f"{CARD_FILE} decisions {shown!r} differ from the bands {MODEL_FILE} was written with "
            f"({bands}): restore the card or write the bundle again"
        )
    return bands


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ModelError(f"model bundle {uri}: expected s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _describe(exc: Exception) -> str:
    """botocore's ClientError carries the AWS error code in ``response``; duck-typed (no botocore import)."""
    error = getattr(exc, "response", None)
    if isinstance(error, dict) and isinstance(error.get("Error"), dict):
        err = error["Error"]
        return f"{err.get('Code', type(exc).__name__)}: {err.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class _TooLarge(Exception):
    pass


def _download(client: Any, bucket: str, key: str, dest: Path, uri: str) -> None:
    cap = MAX_FILE_BYTES[dest.name]
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            resp = client.get_object(Bucket=bucket, Key=key)
            if int(resp.get("ContentLength") or 0) > cap:  # refused before a byte is written
                raise _TooLarge(resp["ContentLength"])
            body, size = resp["Body"], 0
            for chunk in iter(lambda: body.read(1 << 20), b""):
                size += len(chunk)
                if size > cap:  # a ContentLength that lied, or none: stop at the cap
                    raise _TooLarge(f"more than {cap}")
                fh.write(chunk)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except _TooLarge as exc:
        raise ModelError(
            f"model bundle {uri}: s3://{bucket}/{key}: {_over_cap(dest.name, exc.args[0])}"
        ) from None
    except Exception as exc:  # any failure of the injected client means this bundle cannot be used now
        raise ModelUnavailable(
            f"model bundle {uri}: cannot download s3://{bucket}/{key}: {_describe(exc)}"
        ) from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fetch_s3(uri: str, client: Any, cache_dir: str | Path) -> tuple[dict[str, Any], bytes, bytes]:
    if client is None:
        raise ModelError(
            f"model bundle {uri}: an s3:// URI needs an S3 client (load_bundle(..., s3_client=...))"
        )
    bucket, prefix = _split_s3(uri)
    local = Path(cache_dir) / sha256_hex(uri.encode("utf-8"))[:32]
    try:
        return _read_verified(local, uri)  # warm container: already here and intact, no download
    except ModelError:
        pass
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"model bundle {uri}: cannot create cache directory {local}: {exc}") from exc
    for name in BUNDLE_FILES:
        _download(client, bucket, f"{prefix}/{name}" if prefix else name, local / name, uri)
    return _read_verified(local, uri)


def load_bundle(uri: str, *, s3_client: Any = None, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> ModelBundle:
    """Load and verify a bundle from a local directory (relative to the current directory) or ``s3://``."""
    uri = str(uri)
    if uri.startswith("s3://"):
        card, model, features = _fetch_s3(uri, s3_client, cache_dir)
    elif "://" in uri:
        raise ModelError(
            f"model bundle {uri}: unsupported URI scheme (use a local path or s3://bucket/prefix)"
        )
    else:
        card, model, features = _read_verified(Path(uri).expanduser().absolute(), uri)
    return _build(card, model, features, uri)
