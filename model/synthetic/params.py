"""The generating process's parameters: every constant the ``model.synthetic`` docstring names.

Changing any value changes the generated events, their labels and so the trained model's ``version``.
"""

from __future__ import annotations

import numpy as np

CHUNK = 4096  # events per RNG stream: the unit of determinism (see model.synthetic)
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
