"""Outside development checkout refuses to start without a real Stripe key and webhook secret."""

from __future__ import annotations

import secrets

import pytest
from checkout.config import CheckoutSettings
from tweetshop_platform.settings import InsecureSecretsError

OPERATOR_KEY = secrets.token_urlsafe(48)
WEBHOOK_SECRET = "whsec_" + secrets.token_urlsafe(32)
# What Stripe's dashboard hands out: 24 characters after the prefix (older keys) up to 99 (newer ones).
REAL_LOOKING_KEYS = [
    "sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "sk_live_" + "51H" + secrets.token_hex(48),
    "rk_live_" + "51H" + secrets.token_hex(48),
    "rk_test_" + secrets.token_hex(12),
]


pytestmark = pytest.mark.usefixtures("no_tweetshop_environment")


def production(**values: object) -> CheckoutSettings:
    fields: dict[str, object] = {
        "operator_key": OPERATOR_KEY,
        "stripe_api_key": REAL_LOOKING_KEYS[0],
        "stripe_webhook_secret": WEBHOOK_SECRET,
        **values,
    }
    return CheckoutSettings(**fields)  # type: ignore[arg-type]


def refusal(settings: CheckoutSettings) -> str:
    with pytest.raises(InsecureSecretsError) as caught:
        settings.check_secrets()
    return str(caught.value)


def test_the_defaults_are_refused_naming_every_setting() -> None:
    message = refusal(CheckoutSettings())
    for variable in ("TWEETSHOP_OPERATOR_KEY", "TWEETSHOP_STRIPE_API_KEY", "TWEETSHOP_STRIPE_WEBHOOK_SECRET"):
        assert f"{variable} is a public default" in message, message
    assert "sk_test_localstripe" not in message and "whsec_localstripe" not in message


def test_development_takes_the_defaults() -> None:
    CheckoutSettings(environment="development").check_secrets()


@pytest.mark.parametrize("key", REAL_LOOKING_KEYS)
def test_real_stripe_keys_are_accepted(key: str) -> None:
    production(stripe_api_key=key).check_secrets()


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "TWEETSHOP_STRIPE_API_KEY is not set"),
        ("sk_test_tweetshop_dev", "TWEETSHOP_STRIPE_API_KEY is a public default"),
        ("sk_test_local", "TWEETSHOP_STRIPE_API_KEY is a public default"),
        ("sk_test_abc", "TWEETSHOP_STRIPE_API_KEY is 11 bytes, shorter than 32"),
        ("pk_live_" + "a" * 40, "TWEETSHOP_STRIPE_API_KEY is not a Stripe secret or restricted key"),
        (secrets.token_urlsafe(48), "TWEETSHOP_STRIPE_API_KEY is not a Stripe secret or restricted key"),
    ],
)
def test_a_stripe_key_that_cannot_be_real_is_refused(key: str, why: str) -> None:
    message = refusal(production(stripe_api_key=key))
    assert why in message and "Stripe dashboard" in message
    assert "TWEETSHOP_OPERATOR_KEY" not in message and "WEBHOOK" not in message


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("", "TWEETSHOP_STRIPE_WEBHOOK_SECRET is not set"),
        ("whsec_tweetshop_dev", "TWEETSHOP_STRIPE_WEBHOOK_SECRET is a public default"),
        ("whsec_short", "TWEETSHOP_STRIPE_WEBHOOK_SECRET is 11 bytes, shorter than 32"),
        (f"{WEBHOOK_SECRET},whsec_localstripe", "TWEETSHOP_STRIPE_WEBHOOK_SECRET (secret 2 of 2) is a public default"),
    ],
)
def test_a_weak_webhook_secret_is_refused(secret: str, why: str) -> None:
    message = refusal(production(stripe_webhook_secret=secret))
    assert why in message and "stripe listen" in message


def test_two_webhook_secrets_while_one_is_rolled() -> None:
    old = "whsec_" + secrets.token_urlsafe(32)
    settings = production(stripe_webhook_secret=f" {WEBHOOK_SECRET} , {old}\n")
    assert settings.stripe_webhook_secrets == [WEBHOOK_SECRET, old]
    settings.check_secrets()
