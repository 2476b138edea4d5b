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

from model.synthetic.emit import generate_events, generate_labelled
from model.synthetic.params import (
    CARD_TYPE_WEIGHTS,
    CATEGORY_AMOUNT,
    CATEGORY_RISK,
    CHUNK,
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
from model.synthetic.world import _accounts, _world

__all__ = [
    "CARD_TYPE_WEIGHTS",
    "CATEGORY_AMOUNT",
    "CATEGORY_RISK",
    "CHUNK",
    "CNP_CHANNELS",
    "CP_CHANNELS",
    "CURRENCY_TZ",
    "CURRENCY_WEIGHTS",
    "DAYS",
    "DEVICE_CHANNELS",
    "EPOCH",
    "HOUR_WEIGHTS",
    "INTERCEPT",
    "LOGIT_EFFECTS",
    "LOGIT_NOISE_SD",
    "MERCHANT_BY_CHANNEL",
    "N_ACCOUNTS",
    # the account table and the process of one chunk, inspected by tests/unit/test_model_synthetic.py
    "_accounts",
    "_world",
    "generate_events",
    "generate_labelled",
]
