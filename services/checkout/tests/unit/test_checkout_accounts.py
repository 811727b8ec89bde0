"""Buyer accounts' pure rules: credentials, link codes, the vault, cursors of "my orders"."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from checkout import accounts
from checkout.domain import Buyer, PurchaseRequest, ShippingAddress
from checkout.usecases import buyers, orders
from tweetshop_platform.errors import TooManyRequests, Unprocessable

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_credentials_and_buyer_ids_are_recognisable_and_random() -> None:
    credential, stored = accounts.new_credential()
    other, _ = accounts.new_credential()
    assert credential.startswith("tsb_") and credential != other
    assert accounts.is_buyer_credential(credential) and not accounts.is_buyer_credential("tso_order-token")
    assert stored == accounts.credential_hash(credential) and credential not in stored
    buyer_id = accounts.new_buyer_id()
    assert accounts.BUYER_ID.match(buyer_id) and accounts.is_account_buyer_id(buyer_id)
    assert not accounts.is_account_buyer_id("b_0b1c")


def test_a_link_code_is_eight_unambiguous_characters_and_lives_ten_minutes() -> None:
    codes = [accounts.new_link_code(NOW) for _ in range(200)]
    for code in codes:
        assert len(code.code) == 8 and set(code.code) <= set(accounts.LINK_CODE_ALPHABET)
        assert code.handle == code.code[:4] and code.display == f"{code.code[:4]}-{code.code[4:]}"
        assert code.code_hash == accounts.link_code_hash(code.code) and code.code not in code.code_hash
        assert code.expires_at == NOW + timedelta(minutes=10)
    assert len({c.code for c in codes}) == len(codes)
    assert not set("01OI") & set(accounts.LINK_CODE_ALPHABET) and len(accounts.LINK_CODE_ALPHABET) == 32
    expires = NOW + timedelta(minutes=10)
    assert accounts.link_code_live(expires, expires - timedelta(microseconds=1)) is True
    assert accounts.link_code_live(expires, expires) is False


def test_typed_codes_are_normalised_and_anything_else_is_refused_without_echo() -> None:
    assert accounts.normalise_link_code("k7qm-3xwd") == "K7QM3XWD"
    assert accounts.normalise_link_code(" K7QM 3XWD ") == "K7QM3XWD"
    for typed in ("", "K7QM3XW", "K7QM3XWD2", "K7QM-3XW0", "K7QM-3XWI", "K7QM;3XWD", "<img src=x>"):
        with pytest.raises(Unprocessable) as refused:
            accounts.normalise_link_code(typed)
        assert refused.value.code == "invalid_link_code"
        assert not typed or typed not in str(refused.value)
    code = accounts.new_link_code(NOW)
    assert accounts.link_code_matches(accounts.normalise_link_code(code.display.lower()), code.code_hash)
    wrong = "22222222" if code.code != "22222222" else "33333333"
    assert not accounts.link_code_matches(wrong, code.code_hash)


def test_a_code_burns_at_the_fifth_wrong_guess() -> None:
    assert [accounts.burns_after(n) for n in range(1, 7)] == [False, False, False, False, True, True]


def test_sealed_values_open_only_with_their_key_and_context() -> None:
    key = accounts.new_vault_key()
    sealed = accounts.seal("tso_secret-token", key, "order-access-token:1")
    assert "tso_secret-token" not in sealed
    assert accounts.unseal(sealed, key, "order-access-token:1") == "tso_secret-token"
    assert accounts.unseal(sealed, accounts.new_vault_key(), "order-access-token:1") is None
    assert accounts.unseal(sealed, key, "order-access-token:2") is None
    assert accounts.unseal("not base64 !", key, "x") is None
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    assert accounts.unseal(tampered, key, "order-access-token:1") is None


def test_an_account_opens_its_orders_tokens_from_its_vault() -> None:
    account = buyers.Account("ba_" + "0" * 32, NOW, 1, accounts.new_vault_key())
    order_id = uuid.uuid4()
    vaulted = buyers.vault_order_token(account, order_id, "tso_abc")
    assert buyers.order_token(account, order_id, vaulted) == "tso_abc"
    assert buyers.order_token(account, uuid.uuid4(), vaulted) == ""
    assert buyers.order_token(account, order_id, None) == ""


def test_the_order_cursor_round_trips_and_garbage_is_a_422() -> None:
    cursor = accounts.OrderCursor(NOW + timedelta(microseconds=7), uuid.uuid4())
    assert accounts.decode_cursor(accounts.encode_cursor(cursor)) == cursor
    for garbage in ("", "x" * 201, "bm90OmE6Yg", "dDE6MTox"):
        with pytest.raises(Unprocessable):
            accounts.decode_cursor(garbage)


def _request(buyer_id: str) -> PurchaseRequest:
    return PurchaseRequest(
        tweet_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        quantity=1,
        buyer=Buyer(id=buyer_id, email="ada@example.com"),
        shipping=ShippingAddress(name="Ada", line1="1 Rue", city="Paris", country="FR", lat=48.8, lon=2.3),
        payment_method="pm_card_visa",
    )


def test_with_a_credential_the_buyer_id_is_the_accounts_and_without_one_an_account_id_is_refused() -> None:
    account = buyers.Account("ba_" + "1" * 32, NOW, 1, accounts.new_vault_key())
    assert orders.for_account(_request("someone-else"), account).buyer.id == account.id
    assert orders.for_account(_request("b_browser"), None).buyer.id == "b_browser"
    with pytest.raises(Unprocessable) as refused:
        orders.for_account(_request(account.id), None)
    assert refused.value.code == "account_buyer_id"


def test_wrong_link_codes_from_everyone_together_pause_linking_past_the_limit() -> None:
    guard = buyers.LinkGuard("3/hour")
    for _ in range(3):
        guard.check()
        guard.failed()
    with pytest.raises(TooManyRequests) as paused:
        guard.check()
    assert paused.value.code == "link_codes_paused" and paused.value.retry_after_s >= 1
    with pytest.raises(ValueError, match="link_code_failures_limit"):
        buyers.LinkGuard("often")
