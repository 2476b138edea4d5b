"""The account table and the "world" of one chunk: the latent variables of every event and its fraud logit.

The process is documented in the ``model.synthetic`` docstring; its parameters are in ``params``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from model.synthetic.params import (
    _ACCOUNT_TAG,
    CARD_TYPE_WEIGHTS,
    CATEGORY_AMOUNT,
    CATEGORY_RISK,
    CNP_CHANNELS,
    CP_CHANNELS,
    CURRENCY_TZ,
    CURRENCY_WEIGHTS,
    DAYS,
    DEVICE_CHANNELS,
    EPOCH,
    HOUR_WEIGHTS,
    INTERCEPT,
    LOGIT_EFFECTS,
    LOGIT_NOISE_SD,
    MERCHANT_BY_CHANNEL,
    N_ACCOUNTS,
)


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
    """The process for n events: ``({name: (values, known mask or None)}, logit z)``; see the package doc."""
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
