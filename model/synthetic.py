"""Synthetic payment events and fraud labels from a documented generating process.

The producer publishes ``generate_events`` output to Kinesis; training fits on ``generate_labelled``.
Both come from the same process, so the model scores the distribution it was trained on.

Determinism and speed
---------------------
Events are made in chunks of ``CHUNK`` indices; chunk ``c`` draws from ``default_rng([seed, 0xC4, c])``
and the account table from ``default_rng([seed, 0xA5])``. An event therefore depends only on
``(seed, index)``: ``generate_events(s, 10, seed=1, start_index=5) == generate_events(s, 15, seed=1)[5:]``,
and a producer can resume at any index. Inside a chunk everything is vectorised (100,000 events: ~0.8 s,
mostly building the dicts). A call that starts or ends mid-chunk still computes the whole chunk: callers that
generate in a loop should use multiples of ``CHUNK``.

Every event carries ``event_id`` (``f"evt-{seed}-{index:010d}"``, the schema's ``id_field``), ``account_id``
(one of ``N_ACCOUNTS`` with a mildly skewed popularity; the Kinesis partition key) and ``event_time``
(ISO-8601 UTC, e.g. ``2024-01-03T18:22:05Z``: the synthetic transaction time, consistent with the local
``hour_of_day``/``day_of_week`` and the account's time zone, within the four weeks from ``EPOCH``).

The schema drives the output
----------------------------
The process below computes its quantities by feature *name*; the emitted event then follows
``features.json``: only the schema's features are emitted, in its types (int -> ``int``, float ->
``float``, bool -> ``bool``, category -> ``str``), clipped to its ``min``/``max``; a category value the schema
does not list becomes a random listed one; a feature the process does not know is drawn uniformly from its
type and bounds (and is absent in 10% of events if optional); a missing value of a *required* feature is
filled the same way. Optional features are absent (the key is left out, never ``null``) when the process
says the value is unknown. Labels depend on the process only, not on which features the schema exposes.

The generating process (one event)
----------------------------------
Accounts (``N_ACCOUNTS``, fixed per seed): spending level ``L ~ LogNormal(ln 35, 0.7)``; home currency
(USD 55%, EUR 18%, GBP 10%, CAD 6%, AUD 4%, JPY 3%, CHF 2%, OTHER 2%) and a time zone from it;
``card_type`` (debit 55%, credit 40%, prepaid 5%); ``customer_age ~ N(44, 15)`` in 18..95, unknown for 12%;
``account_age_days``: 6% opened in the last 30 days, else ``30 + Exp(1500)`` (never before the holder was
18); ``chargebacks_180d``: 0 for 93%, else ``1 + Poisson(0.7)``; a daily rate ``Gamma(2, 1.5)``; a share of
card-not-present use ``Beta(2, 3)``; a travel propensity ``Beta(1, 30)``. ~3% of accounts lack a 30-day
history beyond the new ones.

Per event: ``channel``: card-not-present with the account's share (ecommerce 60%, mobile_app 35%,
mail_phone 5%), else pos 90% / atm 10%; ``card_present = channel in {pos, atm}``. ``merchant_category``
depends on the channel (``MERCHANT_BY_CHANNEL``). ``is_international`` with the travel propensity (x3 for
travel merchants); an international event is in a foreign currency 70% of the time. Local hour from a
diurnal profile (``HOUR_WEIGHTS``: little at night), a uniform day. ``amount = L * CATEGORY_AMOUNT[cat] *
LogNormal(0, 0.9)`` in cents (ATM: multiples of 20); ``avg_amount_30d = 1.9 L * LogNormal(0, 0.1)`` when
there is a 30-day history, and then ``velocity_ratio = amount / avg_amount_30d``. Counts include the
event: ``txn_count_1h = 1 + Poisson(rate/24, x20 in a 3% "burst")``, ``txn_count_24h = txn_count_1h +
Poisson(rate)``, ``amount_sum_24h = amount + 1.5 L * Gamma(txn_count_24h - 1)`` (so ``>= amount``);
``minutes_since_last_txn`` fits the counts (unknown for 2%). ``failed_logins_24h ~ Poisson(0.08)``, or
``Poisson(3)`` for the 4% of accounts under attack. Device fields exist for ecommerce/mobile_app only:
``is_new_device`` 7%, ``device_age_days`` 0 if new, else ``1 + Exp(300)`` (unknown for 10%).
``ip_risk_score`` (ecommerce/mobile_app, 92% known) ``Beta(1.2, 9)``, 6% proxies ``Beta(5, 2)``;
``email_domain_risk`` (card-not-present, 85% known) ``Beta(1, 12)``, 5% ``Beta(3, 2)``;
``billing_shipping_match`` (card-not-present, 80% known) 90% true; ``cvv_match`` (card-not-present, 90%)
98.5% true; ``avs_match`` (card-not-present, 65%) 93% true; ``three_ds_authenticated`` 45% of
ecommerce/mobile_app, else false. ``merchant_risk_score ~ Beta`` around the category's risk
(``CATEGORY_RISK``); ``merchant_fraud_rate_90d = 0.004 e^(3 risk) LogNormal(0, 0.3)`` (85% known).
``distance_from_home_km``: card present ``LogNormal(ln 6, 1.1)`` (90% known), card-not-present (IP
geolocation) ``LogNormal(ln 40, 1.6)`` (70% known), international ``300 + LogNormal(ln 2000, 0.8)``.

Label: ``fraud ~ Bernoulli(sigmoid(z))`` with ``z = INTERCEPT + noise + sum of effects``; a feature whose
value is unknown adds nothing; ``noise ~ N(0, 0.6)`` stands for what no feature shows. Effects on the
log-odds (``LOGIT_EFFECTS``; an odds ratio is ``e^effect``)::

    velocity_ratio > 1                   +1.2 * ln(velocity_ratio)   (3x the usual amount: +1.3)
    no 30-day history                    +0.8
    card not present                     +0.9
    card not present and new device      +1.8   (on top)
    ip_risk_score                        +4.0 * score
    email_domain_risk                    +2.3 * risk
    failed_logins_24h                    +0.7 * min(n, 6)
    night (hour_of_day 0..5)             +1.2
    merchant_risk_score                  +2.6 * score
    is_international                     +1.0, +0.7 more when card not present
    account_age_days < 30                +1.0
    cvv_match false                      +2.1
    avs_match false                      +0.9
    billing_shipping_match false         +1.2
    three_ds_authenticated               -1.6
    chargebacks_180d                     +0.6 * min(n, 4)
    txn_count_1h                         +0.4 * min(n - 1, 8)
    card_type prepaid                    +0.7
    distance_from_home_km                +0.4 * ln(1 + km / 100)

``INTERCEPT = -7.15`` makes ~3% of events fraud (the base rate; tested to stay within 2-5%). Ranking events
by ``z`` without its noise term (the best any model can do) gives an AUC of about 0.92.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from consumers.core.schema import Feature, FeatureSchema

CHUNK = 4096  # events per RNG stream: the unit of determinism (see module docstring)
N_ACCOUNTS = 5000
EPOCH = np.datetime64("2024-01-01T00:00:00", "s")  # a Monday: day_of_week 0 (features.json)
DAYS = 28

_ACCOUNT_TAG, _CHUNK_TAG = 0xA5, 0xC4

CURRENCY_WEIGHTS = {
    "USD": 0.55,
    "EUR": 0.18,
    "GBP": 0.10,
    "CAD": 0.06,
    "AUD": 0.04,
    "JPY": 0.03,
    "CHF": 0.02,
    "OTHER": 0.02,
}
CURRENCY_TZ = {"USD": -6, "EUR": 1, "GBP": 0, "CAD": -5, "AUD": 10, "JPY": 9, "CHF": 1, "OTHER": 3}
CARD_TYPE_WEIGHTS = {"debit": 0.55, "credit": 0.40, "prepaid": 0.05}
CNP_CHANNELS = {"ecommerce": 0.60, "mobile_app": 0.35, "mail_phone": 0.05}
CP_CHANNELS = {"pos": 0.90, "atm": 0.10}
DEVICE_CHANNELS = ("ecommerce", "mobile_app")
MERCHANT_BY_CHANNEL = {
    "pos": {
        "grocery": 0.30,
        "restaurants": 0.20,
        "fuel": 0.15,
        "fashion": 0.12,
        "health": 0.10,
        "electronics": 0.06,
        "travel": 0.03,
        "utilities": 0.04,
    },
    "atm": {"utilities": 1.0},  # cash withdrawal: booked under the bank's own category
    "ecommerce": {
        "electronics": 0.20,
        "fashion": 0.20,
        "digital_goods": 0.15,
        "travel": 0.12,
        "gaming": 0.08,
        "grocery": 0.10,
        "health": 0.05,
        "utilities": 0.10,
    },
    "mobile_app": {
        "digital_goods": 0.25,
        "gaming": 0.15,
        "restaurants": 0.20,
        "travel": 0.10,
        "fashion": 0.10,
        "grocery": 0.10,
        "utilities": 0.10,
    },
    "mail_phone": {"travel": 0.40, "utilities": 0.30, "health": 0.30},
}
CATEGORY_AMOUNT = {
    "grocery": 1.2,
    "electronics": 4.0,
    "travel": 6.0,
    "restaurants": 0.8,
    "fuel": 1.0,
    "gaming": 0.6,
    "fashion": 1.5,
    "digital_goods": 0.4,
    "health": 1.2,
    "utilities": 2.0,
}
CATEGORY_RISK = {
    "grocery": 0.08,
    "electronics": 0.30,
    "travel": 0.25,
    "restaurants": 0.08,
    "fuel": 0.12,
    "gaming": 0.35,
    "fashion": 0.15,
    "digital_goods": 0.40,
    "health": 0.06,
    "utilities": 0.05,
}
HOUR_WEIGHTS = np.array(
    [
        1.0,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.2,
        2.5,
        4.0,
        5.0,
        5.5,
        6.0,
        7.0,
        6.5,
        5.5,
        5.0,
        5.5,
        6.5,
        7.0,
        6.5,
        5.0,
        3.5,
        2.5,
        1.5,
    ]
)

LOGIT_EFFECTS = {
    "log_velocity": 1.2,
    "no_history": 0.8,
    "card_not_present": 0.9,
    "cnp_new_device": 1.8,
    "ip_risk_score": 4.0,
    "email_domain_risk": 2.3,
    "failed_logins": 0.7,
    "night": 1.2,
    "merchant_risk_score": 2.6,
    "international": 1.0,
    "international_cnp": 0.7,
    "new_account": 1.0,
    "cvv_mismatch": 2.1,
    "avs_mismatch": 0.9,
    "billing_shipping_mismatch": 1.2,
    "three_ds": -1.6,
    "chargebacks": 0.6,
    "burst": 0.4,
    "prepaid": 0.7,
    "distance": 0.4,
}
INTERCEPT = -7.15
LOGIT_NOISE_SD = 0.6


# --- helpers ----------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    """n draws of the keys of ``weights`` as an object array of str."""
    keys = np.array(list(weights), dtype=object)
    p = np.fromiter(weights.values(), dtype=np.float64)
    return keys[rng.choice(len(keys), size=n, p=p / p.sum())]


def _known(rng: np.random.Generator, share: float, n: int) -> np.ndarray:
    return rng.random(n) < share


@lru_cache(maxsize=4)
def _accounts(seed: int) -> dict[str, np.ndarray]:
    """The account table for a seed: per-account attributes that make an account's events correlated.

    Cached (read-only arrays) because a producer calls ``generate_events`` once per small batch.
    """
    rng = np.random.default_rng([seed, _ACCOUNT_TAG])
    n = N_ACCOUNTS
    popularity = 1.0 / (np.arange(n) + 50.0) ** 0.7  # mild skew: partition keys stay well spread
    currency = _pick(rng, CURRENCY_WEIGHTS, n)
    tz = np.array([CURRENCY_TZ[c] for c in currency]) + rng.integers(-1, 2, n) * (currency == "USD")
    customer_age = np.clip(np.rint(rng.normal(44, 15, n)), 18, 95)
    new = rng.random(n) < 0.06
    age_days = np.where(new, rng.integers(0, 30, n), 30 + rng.exponential(1500, n))
    age_days = np.rint(np.minimum(age_days, (customer_age - 18) * 365 + rng.integers(0, 30, n)))
    table = {
        "cdf": np.cumsum(popularity) / popularity.sum(),
        "id": np.array([f"acct-{k:06d}" for k in range(n)], dtype=object),
        "level": rng.lognormal(np.log(35), 0.7, n),
        "currency": currency,
        "tz": tz,
        "card_type": _pick(rng, CARD_TYPE_WEIGHTS, n),
        "customer_age": customer_age,
        "customer_age_known": _known(rng, 0.88, n),
        "account_age_days": age_days,
        "history": (age_days >= 30) & _known(rng, 0.97, n),
        "chargebacks_180d": np.where(rng.random(n) < 0.07, 1 + rng.poisson(0.7, n), 0),
        "daily_rate": rng.gamma(2.0, 1.5, n),
        "cnp_share": rng.beta(2, 3, n),
        "travel": rng.beta(1, 30, n),
        "attacked": rng.random(n) < 0.04,
    }
    for arr in table.values():
        arr.flags.writeable = False
    return table


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- the process (one chunk) --------------------------------------------------------------------
def _world(rng: np.random.Generator, acc: dict[str, np.ndarray], n: int) -> tuple[dict[str, Any], np.ndarray]:
    """The process for n events: ``({name: (values, known mask or None)}, logit z)``; see the module doc."""
    a = np.searchsorted(acc["cdf"], rng.random(n), side="right").clip(0, N_ACCOUNTS - 1)
    level = acc["level"][a]

    cnp = rng.random(n) < acc["cnp_share"][a]
    channel = np.where(cnp, _pick(rng, CNP_CHANNELS, n), _pick(rng, CP_CHANNELS, n))
    category = np.empty(n, dtype=object)
    for ch, weights in MERCHANT_BY_CHANNEL.items():
        m = channel == ch
        category[m] = _pick(rng, weights, int(m.sum()))
    card_present = ~cnp
    digital = np.isin(channel, DEVICE_CHANNELS)

    travel = np.where(category == "travel", 3.0, 1.0)
    international = rng.random(n) < np.minimum(acc["travel"][a] * travel, 0.9)
    foreign = international & (rng.random(n) < 0.7)
    currency = np.where(foreign, _pick(rng, CURRENCY_WEIGHTS, n), acc["currency"][a])

    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    day = rng.integers(0, DAYS, n)
    local_s = day * 86400 + hour * 3600 + rng.integers(0, 3600, n)
    utc = EPOCH + (local_s - acc["tz"][a] * 3600).astype("timedelta64[s]")

    cat_amount = np.array([CATEGORY_AMOUNT[c] for c in category])
    amount = np.maximum(np.round(level * cat_amount * rng.lognormal(0, 0.9, n), 2), 0.5)
    atm = channel == "atm"
    amount[atm] = np.maximum(np.round(amount[atm] / 20) * 20, 20)
    history = acc["history"][a]
    avg = np.round(1.9 * level * rng.lognormal(0, 0.1, n), 2)
    velocity = np.round(amount / avg, 4)

    rate = acc["daily_rate"][a]
    burst = rng.random(n) < 0.03
    count_1h = 1 + rng.poisson(rate / 24 * np.where(burst, 20, 1))
    count_24h = count_1h + rng.poisson(rate)
    sum_24h = np.round(amount + 1.5 * level * rng.gamma(np.maximum(count_24h - 1, 0)), 2)
    since = np.where(
        count_1h > 1,
        np.minimum(rng.exponential(60 / count_1h), 60),
        np.where(count_24h > 1, rng.uniform(60, 1440, n), 1440 + rng.exponential(2880, n)),
    )
    since = np.round(np.maximum(since, 0.01), 2)

    failed = np.where(acc["attacked"][a], rng.poisson(3, n), rng.poisson(0.08, n))
    new_device = digital & (rng.random(n) < 0.07)
    device_age = np.where(new_device, 0, 1 + np.rint(rng.exponential(300, n)))
    ip_risk = np.round(np.where(rng.random(n) < 0.06, rng.beta(5, 2, n), rng.beta(1.2, 9, n)), 4)
    email_risk = np.round(np.where(rng.random(n) < 0.05, rng.beta(3, 2, n), rng.beta(1, 12, n)), 4)
    bsm = rng.random(n) < 0.90
    cvv = rng.random(n) < 0.985
    avs = rng.random(n) < 0.93
    three_ds = digital & (rng.random(n) < 0.45)
    risk_mean = np.array([CATEGORY_RISK[c] for c in category])
    merchant_risk = np.round(rng.beta(10 * risk_mean, 10 * (1 - risk_mean)), 4)
    merchant_rate = np.round(np.clip(0.004 * np.exp(3 * merchant_risk) * rng.lognormal(0, 0.3, n), 0, 1), 6)
    distance = np.where(card_present, rng.lognormal(np.log(6), 1.1, n), rng.lognormal(np.log(40), 1.6, n))
    distance = np.where(international, 300 + rng.lognormal(np.log(2000), 0.8, n), distance)
    distance = np.round(np.minimum(distance, 20000), 2)

    world: dict[str, Any] = {
        "amount": (amount, None),
        "currency": (currency, None),
        "merchant_category": (category, None),
        "channel": (channel, None),
        "card_type": (acc["card_type"][a], None),
        "card_present": (card_present, None),
        "is_international": (international, None),
        "hour_of_day": (hour, None),
        "day_of_week": (day % 7, None),
        "account_age_days": (acc["account_age_days"][a], None),
        "customer_age": (acc["customer_age"][a], acc["customer_age_known"][a]),
        "txn_count_1h": (count_1h, None),
        "txn_count_24h": (count_24h, None),
        "amount_sum_24h": (sum_24h, None),
        "avg_amount_30d": (avg, history),
        "distance_from_home_km": (distance, _known(rng, 0.9, n) & card_present | _known(rng, 0.7, n) & cnp),
        "minutes_since_last_txn": (since, _known(rng, 0.98, n)),
        "failed_logins_24h": (failed, None),
        "device_age_days": (device_age, digital & _known(rng, 0.9, n)),
        "is_new_device": (new_device, None),
        "ip_risk_score": (ip_risk, digital & _known(rng, 0.92, n)),
        "email_domain_risk": (email_risk, cnp & _known(rng, 0.85, n)),
        "billing_shipping_match": (bsm, cnp & _known(rng, 0.80, n)),
        "cvv_match": (cvv, cnp & _known(rng, 0.90, n)),
        "avs_match": (avs, cnp & _known(rng, 0.65, n)),
        "three_ds_authenticated": (three_ds, None),
        "merchant_risk_score": (merchant_risk, None),
        "merchant_fraud_rate_90d": (merchant_rate, _known(rng, 0.85, n)),
        "chargebacks_180d": (acc["chargebacks_180d"][a], None),
        "velocity_ratio": (velocity, history),
        # not features: the envelope every event carries
        "account_id": (acc["id"][a], None),
        "event_time": (np.datetime_as_string(utc, unit="s", timezone="UTC"), None),
    }

    def known(name: str) -> np.ndarray:
        mask = world[name][1]
        return np.ones(n, dtype=bool) if mask is None else mask

    e = LOGIT_EFFECTS
    z = INTERCEPT + rng.normal(0, LOGIT_NOISE_SD, n)
    z += np.where(history & (velocity > 1), e["log_velocity"] * np.log(np.maximum(velocity, 1)), 0)
    z += np.where(history, 0, e["no_history"])
    z += e["card_not_present"] * cnp + e["cnp_new_device"] * (cnp & new_device)
    z += np.where(known("ip_risk_score"), e["ip_risk_score"] * ip_risk, 0)
    z += np.where(known("email_domain_risk"), e["email_domain_risk"] * email_risk, 0)
    z += e["failed_logins"] * np.minimum(failed, 6)
    z += e["night"] * (hour <= 5)
    z += e["merchant_risk_score"] * merchant_risk
    z += e["international"] * international + e["international_cnp"] * (international & cnp)
    z += e["new_account"] * (acc["account_age_days"][a] < 30)
    z += e["cvv_mismatch"] * (known("cvv_match") & ~cvv)
    z += e["avs_mismatch"] * (known("avs_match") & ~avs)
    z += e["billing_shipping_mismatch"] * (known("billing_shipping_match") & ~bsm)
    z += e["three_ds"] * three_ds
    z += e["chargebacks"] * np.minimum(acc["chargebacks_180d"][a], 4)
    z += e["burst"] * np.minimum(count_1h - 1, 8)
    z += e["prepaid"] * (acc["card_type"][a] == "prepaid")
    z += np.where(known("distance_from_home_km"), e["distance"] * np.log1p(distance / 100), 0)
    return world, z


# --- schema-driven emission ----------------------------------------------------------------------
def _uniform(rng: np.random.Generator, f: Feature, n: int) -> np.ndarray:
    """Values for a feature the process does not know, from its type and bounds alone."""
    if f.type == "bool":
        return rng.random(n) < 0.5
    if f.type == "category":
        return np.array(f.categories, dtype=object)[rng.integers(0, len(f.categories), n)]
    lo = 0.0 if f.min is None else f.min
    hi = lo + 100.0 if f.max is None else f.max
    if f.type == "int":
        return rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, n)
    return np.round(rng.uniform(lo, hi, n), 4)


def _column(
    rng: np.random.Generator, f: Feature, world: dict[str, Any], n: int
) -> tuple[list[Any], np.ndarray | None]:
    """One schema feature as a list of JSON-typed Python values, and its missing mask (None: none missing)."""
    values, known = world.get(f.name, (None, None))
    if values is None:
        values, known = _uniform(rng, f, n), (_known(rng, 0.9, n) if not f.required else None)
    if known is not None and f.required:  # the schema insists: fill what the process does not know
        values = np.where(known, values, _uniform(rng, f, n))
        known = None
    if f.type == "category":
        listed = np.isin(values, f.categories)
        if not listed.all():
            values = np.where(listed, values, _uniform(rng, f, n))
        out = values.tolist()
    elif f.type == "bool":
        out = values.astype(bool).tolist()
    else:
        arr = values.astype(np.float64)
        if f.min is not None or f.max is not None:
            arr = np.clip(arr, f.min, f.max)
        if f.type == "int":
            lo = None if f.min is None else np.ceil(f.min)
            hi = None if f.max is None else np.floor(f.max)
            out = np.clip(np.rint(arr), lo, hi).astype(np.int64).tolist()
        else:
            out = arr.tolist()
    return out, (None if known is None or known.all() else ~known)


def _chunk(
    schema: FeatureSchema, acc: dict[str, np.ndarray], seed: int, c: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Events and labels for indices [c * CHUNK, (c + 1) * CHUNK)."""
    rng = np.random.default_rng([seed, _CHUNK_TAG, c])
    n = CHUNK
    world, z = _world(rng, acc, n)
    labels = (rng.random(n) < _sigmoid(z)).astype(np.int8)
    first = c * CHUNK
    keys = [schema.id_field, "account_id", "event_time"]
    cols: list[list[Any]] = [
        [f"evt-{seed}-{first + i:010d}" for i in range(n)],
        world["account_id"][0].tolist(),
        world["event_time"][0].tolist(),
    ]
    missing: list[tuple[str, list[int]]] = []  # (feature, rows where it is absent)
    for f in schema.features:
        col, miss = _column(rng, f, world, n)
        keys.append(f.name)
        cols.append(col)
        if miss is not None:
            missing.append((f.name, np.flatnonzero(miss).tolist()))
    events = [dict(zip(keys, row)) for row in zip(*cols)]
    for name, rows in missing:  # absent, not null: optional fields are left out (features.json)
        for i in rows:
            del events[i][name]
    return events, labels


def _generate(
    schema: FeatureSchema, n: int, seed: int, start_index: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if n < 0 or start_index < 0:
        raise ValueError(f"n and start_index must be >= 0, got n={n}, start_index={start_index}")
    if n == 0:
        return [], np.zeros(0, dtype=np.int8)
    acc = _accounts(int(seed))
    first, last = start_index // CHUNK, (start_index + n - 1) // CHUNK
    events: list[dict[str, Any]] = []
    labels: list[np.ndarray] = []
    for c in range(first, last + 1):
        ev, lab = _chunk(schema, acc, int(seed), c)
        lo = start_index - c * CHUNK if c == first else 0
        hi = start_index + n - c * CHUNK if c == last else CHUNK
        events.extend(ev[lo:hi])
        labels.append(lab[lo:hi])
    return events, np.concatenate(labels)


def generate_events(
    schema: FeatureSchema, n: int, seed: int = 0, *, start_index: int = 0
) -> list[dict[str, Any]]:
    """``n`` valid events for indices ``start_index .. start_index + n - 1`` of the stream for ``seed``.

    Deterministic per (seed, index), so a producer can resume at any index and get the same events.
    """
    return _generate(schema, n, seed, start_index)[0]


def generate_labelled(schema: FeatureSchema, n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The first ``n`` events for ``seed`` and their 0/1 fraud labels (int8), as documented above."""
    return _generate(schema, n, seed, 0)
