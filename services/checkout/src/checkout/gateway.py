"""Stripe, behind a small interface: PaymentIntents and refunds, asynchronous, measured.

Stripe answers are turned into small frozen objects at once, and Stripe's errors
into two kinds: ``PaymentDeclined`` (Stripe said no: the card, the payment
method or the request is refused; trying again will not help) and
``PaymentProviderUnavailable`` (network, 5xx, rate limit, our own credentials:
try again later, never with a second PaymentIntent).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import stripe
import structlog
from opentelemetry.trace import SpanKind, StatusCode
from tweetshop_platform import telemetry

from . import cards, metrics
from .config import CheckoutSettings
from .domain import IntentFacts, Order, PaymentOutcome, outcome_of_intent, payment_mismatch

log = structlog.get_logger(__name__)

T = TypeVar("T")


class PaymentDeclined(Exception):
    """Stripe refused: the message is Stripe's, fit to show the buyer."""

    def __init__(self, message: str, payment_intent_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.payment_intent_id = payment_intent_id


class PaymentProviderUnavailable(Exception):
    """Stripe could not be reached or failed; the same call may be tried again later.

    ``nothing_done``: Stripe refused the call before acting on it (a 429 rate limit), so no
    PaymentIntent can have come of it; any other failure may have acted (a lost answer).
    """

    def __init__(self, message: str, *, nothing_done: bool = False) -> None:
        super().__init__(message)
        self.nothing_done = nothing_done


@dataclass(frozen=True)
class Intent:
    """What checkout needs of a PaymentIntent."""

    id: str
    status: str
    client_secret: str | None
    error_message: str | None
    order_id: str | None
    # What the intent charges, as Stripe says: an order is paid only by an intent of its own amount, currency and mode.
    amount_minor: int | None = None
    currency: str | None = None
    livemode: bool | None = None

    def outcome(self) -> PaymentOutcome:
        """Where this intent leaves its order (with what it charges, checked before it can pay one)."""
        return outcome_of_intent(
            self.id,
            self.status,
            self.client_secret,
            self.error_message,
            facts=IntentFacts(self.order_id, self.amount_minor, self.currency, self.livemode),
        )

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Intent:
        """From a PaymentIntent as JSON (an API answer or a webhook's data.object)."""
        error = data.get("last_payment_error") or {}
        metadata = data.get("metadata") or {}
        amount = data.get("amount")
        currency = data.get("currency")
        livemode = data.get("livemode")
        order_id = metadata.get("order_id") if isinstance(metadata, dict) else None
        return cls(
            id=str(data["id"]),
            status=str(data.get("status", "")),
            client_secret=data.get("client_secret"),
            error_message=error.get("message") if isinstance(error, dict) else None,
            order_id=str(order_id) if order_id is not None else None,
            # bool is an int in Python: a JSON true is not an amount.
            amount_minor=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
            currency=currency if isinstance(currency, str) else None,
            livemode=livemode if isinstance(livemode, bool) else None,
        )


@dataclass(frozen=True)
class RefundResult:
    id: str
    status: str
    amount_minor: int


class PaymentGateway(Protocol):
    """What the use cases need from a payment provider (Stripe here; fakes in unit tests)."""

    async def create_intent(self, order: Order, attempt: int) -> Intent: ...

    async def find_intent_for_order(self, order: Order) -> Intent | None: ...

    async def retrieve_intent(self, payment_intent_id: str) -> Intent: ...

    async def cancel_intent(self, payment_intent_id: str) -> Intent: ...

    async def create_refund(
        self, payment_intent_id: str, amount_minor: int, refund_id: uuid.UUID, order_id: uuid.UUID
    ) -> RefundResult: ...

    async def find_refund(self, payment_intent_id: str, refund_id: uuid.UUID) -> RefundResult | None: ...


def _message(exc: stripe.StripeError) -> str:
    return (exc.user_message or str(exc) or type(exc).__name__)[:500]


class _PooledAIOHTTPClient(stripe.AIOHTTPClient):
    """The library's aiohttp client with a connection pool as large as the payments in flight.

    aiohttp rather than the library's default httpx: per call, httpx and httpcore (through anyio) cost this
    service about as much CPU as the rest of a payment step. The session is made on first use, in the loop.
    """

    def __init__(self, *, timeout: float, connections: int) -> None:
        super().__init__(timeout=aiohttp.ClientTimeout(total=timeout))
        self._connections = connections
        self._pooled: aiohttp.ClientSession | None = None

    @property
    def _session(self) -> aiohttp.ClientSession:
        if self._pooled is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections, ssl=ssl.create_default_context(cafile=stripe.ca_bundle_path)
            )
            self._pooled = aiohttp.ClientSession(connector=connector)
        return self._pooled


class StripeGateway:
    """The real thing, through the official library's async methods (aiohttp: the event loop never blocks)."""

    def __init__(self, settings: CheckoutSettings) -> None:
        base = settings.stripe_base_url
        self._localstripe = settings.stripe_is_localstripe
        self._livemode = settings.stripe_livemode
        self._http = _PooledAIOHTTPClient(
            timeout=settings.stripe_timeout_s, connections=settings.payment_max_in_flight + 20
        )
        self._client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": base} if base else None,
            max_network_retries=settings.stripe_max_network_retries,
            http_client=self._http,
        )
        # Tracing (off: None): a CLIENT span per Stripe call, with the operation's name and never its parameters.
        self._tracer = telemetry.tracer(settings.service_name, settings.tracing)
        address = urlsplit(base or "https://api.stripe.com")
        self._peer: dict[str, Any] = {
            "peer.service": "stripe",
            "server.address": address.hostname or "",
            "server.port": address.port or (443 if address.scheme == "https" else 80),
            "rpc.service": "stripe",
        }

    async def aclose(self) -> None:
        """Close the HTTP connections to Stripe."""
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            with self._span(operation):
                return await call()
        except (stripe.CardError, stripe.InvalidRequestError) as exc:
            metrics.STRIPE_ERRORS.labels(operation, type(exc).__name__).inc()
            intent_id = None
            if exc.error is not None and exc.error.payment_intent is not None:
                intent_id = exc.error.payment_intent.id
            raise PaymentDeclined(_message(exc), intent_id) from exc
        except stripe.RateLimitError as exc:
            # Refused before it was acted on (Stripe saves no result for a rate-limited request): back off and retry.
            metrics.STRIPE_ERRORS.labels(operation, type(exc).__name__).inc()
            log.warning("stripe rate limit", operation=operation, http_status=exc.http_status)
            raise PaymentProviderUnavailable(f"{type(exc).__name__}: {_message(exc)}", nothing_done=True) from exc
        except stripe.StripeError as exc:
            # Connection errors, 5xx, idempotency conflicts, and our own key being refused.
            metrics.STRIPE_ERRORS.labels(operation, type(exc).__name__).inc()
            log.warning("stripe call failed", operation=operation, error=repr(exc), http_status=exc.http_status)
            raise PaymentProviderUnavailable(f"{type(exc).__name__}: {_message(exc)}") from exc
        except OSError as exc:
            metrics.STRIPE_ERRORS.labels(operation, type(exc).__name__).inc()
            raise PaymentProviderUnavailable(repr(exc)) from exc
        finally:
            metrics.STRIPE_SECONDS.labels(operation).observe(time.perf_counter() - started)

    @contextlib.contextmanager
    def _span(self, operation: str) -> Iterator[None]:
        """The call's CLIENT span (tracing on): ``stripe <operation>``; a failure is recorded by its type alone (a
        Stripe message may repeat what was sent)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span(
            f"stripe {operation}",
            kind=SpanKind.CLIENT,
            attributes={**self._peer, "rpc.method": operation},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.set_attribute("error.type", type(exc).__qualname__)
                if isinstance(exc, stripe.StripeError) and exc.http_status is not None:
                    span.set_attribute("http.response.status_code", exc.http_status)
                raise

    async def create_intent(self, order: Order, attempt: int) -> Intent:
        """Create and confirm the order's PaymentIntent (a CardError means declined)."""
        params: dict[str, Any] = {
            "amount": order.amount_minor,
            "currency": order.currency.lower(),
            "payment_method": order.payment_method,
            "confirm": True,
            "metadata": {"order_id": str(order.id)},
        }
        # Cards only, no redirects, so no return_url is needed. localstripe knows only the older parameter.
        if self._localstripe:
            params["payment_method_types"] = ["card"]
        else:
            params["automatic_payment_methods"] = {"enabled": True, "allow_redirects": "never"}
        # A saved card, or one to save (checkout.cards): the intent is made for the buyer's Customer.
        if order.payment_customer is not None:
            params["customer"] = order.payment_customer
            if order.save_card:
                if self._localstripe:
                    # localstripe refuses setup_future_usage and never attaches a card itself: attach it first.
                    await self.attach_payment_method(order.payment_method, order.payment_customer)
                else:
                    params["setup_future_usage"] = cards.SETUP_FUTURE_USAGE
        # Every order's call: Stripe's answer as JSON (raw_request), not a tree of StripeObjects turned back into
        # dicts (~3 % of this service's CPU per order, py-spy). The same request, options and errors.
        answer = await self._call(
            "payment_intents.create",
            lambda: self._client.raw_request_async(
                "post",
                "/v1/payment_intents",
                idempotency_key=f"order-{order.id}-attempt-{attempt}",
                **params,
            ),
        )
        return Intent.from_data(answer.data)

    async def find_intent_for_order(self, order: Order) -> Intent | None:
        """The PaymentIntent made for this order by an attempt whose answer was lost, if any.

        localstripe has no search and ignores Idempotency-Key, so this pages
        through the list; it only runs when an attempt was recorded without its
        PaymentIntent id (a crash or a lost answer), which is rare. Metadata is
        anyone's to write who holds the API key: only an intent that also charges
        the order's amount and currency, in this key's mode, can be the one we made.
        """

        async def scan() -> Intent | None:
            page = await self._client.v1.payment_intents.list_async({"limit": 100})
            async for item in page.auto_paging_iter():
                data = item.to_dict()
                if (data.get("metadata") or {}).get("order_id") != str(order.id):
                    continue
                intent = Intent.from_data(data)
                if payment_mismatch(order, intent.outcome(), livemode=self._livemode, may_adopt=True) is None:
                    return intent
                log.warning("an intent names this order but does not match it", payment_intent_id=intent.id)
            return None

        return await self._call("payment_intents.list", scan)

    async def retrieve_intent(self, payment_intent_id: str) -> Intent:
        """The intent as Stripe sees it now."""
        intent = await self._call(
            "payment_intents.retrieve", lambda: self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        )
        return Intent.from_data(intent.to_dict())

    async def cancel_intent(self, payment_intent_id: str) -> Intent:
        """Cancel an intent that was never completed."""
        intent = await self._call(
            "payment_intents.cancel",
            lambda: self._client.v1.payment_intents.cancel_async(
                payment_intent_id, options={"idempotency_key": f"cancel-{payment_intent_id}"}
            ),
        )
        return Intent.from_data(intent.to_dict())

    async def create_refund(
        self, payment_intent_id: str, amount_minor: int, refund_id: uuid.UUID, order_id: uuid.UUID
    ) -> RefundResult:
        """Give ``amount_minor`` back to the buyer."""
        result = await self._call(
            "refunds.create",
            lambda: self._client.v1.refunds.create_async(
                {
                    "payment_intent": payment_intent_id,
                    "amount": amount_minor,
                    "metadata": {"order_id": str(order_id), "refund_id": str(refund_id)},
                },
                {"idempotency_key": f"refund-{refund_id}"},
            ),
        )
        return RefundResult(id=result.id, status=str(result.status), amount_minor=int(result.amount))

    async def find_refund(self, payment_intent_id: str, refund_id: uuid.UUID) -> RefundResult | None:
        """The Stripe refund made for our refund ``refund_id``, if its answer was lost."""

        async def scan() -> RefundResult | None:
            page = await self._client.v1.refunds.list_async({"payment_intent": payment_intent_id, "limit": 100})
            async for item in page.auto_paging_iter():
                data = item.to_dict()
                if (data.get("metadata") or {}).get("refund_id") == str(refund_id):
                    return RefundResult(id=str(data["id"]), status=str(data["status"]), amount_minor=data["amount"])
            return None

        return await self._call("refunds.list", scan)

    # --- saved cards (checkout.cards) ----------------------------------------------------------------------

    async def retrieve_payment_method(self, payment_method_id: str) -> cards.PaymentMethodFacts:
        """The PaymentMethod as Stripe sees it (PaymentDeclined when Stripe knows no such one)."""
        found = await self._call(
            "payment_methods.retrieve",
            lambda: self._client.v1.payment_methods.retrieve_async(payment_method_id),
        )
        return cards.facts_of(found.to_dict())

    async def create_customer(self, buyer_id: str) -> str:
        """A Customer for the buyer (only its opaque id, in metadata); the same one again for the same buyer's key."""
        customer = await self._call(
            "customers.create",
            lambda: self._client.v1.customers.create_async(
                {"metadata": {"buyer_id": buyer_id}},
                {"idempotency_key": cards.customer_idempotency_key(buyer_id)},
            ),
        )
        return str(customer.id)

    async def find_customer(self, buyer_id: str) -> str | None:
        """The Customer an interrupted creation made for the buyer, if any (found by ``metadata.buyer_id``).

        Stripe's search finds it (``buyer_id`` is our own opaque id: nothing to escape); localstripe has no search,
        so there the list is paged through. Only asked after an attempt whose answer was lost, which is rare.
        """

        async def scan() -> str | None:
            if not self._localstripe:
                result = await self._client.v1.customers.search_async(
                    {"query": f"metadata['buyer_id']:'{buyer_id}'", "limit": 10}
                )
                ids = sorted((int(c.created), str(c.id)) for c in result.data)
                return ids[0][1] if ids else None
            page = await self._client.v1.customers.list_async({"limit": 100})
            async for item in page.auto_paging_iter():
                if (item.to_dict().get("metadata") or {}).get("buyer_id") == buyer_id:
                    return str(item.id)
            return None

        return await self._call("customers.search", scan)

    async def attach_payment_method(self, payment_method_id: str, customer_id: str) -> None:
        """Keep the card on the Customer (localstripe only; real Stripe attaches it when the intent succeeds)."""
        await self._call(
            "payment_methods.attach",
            lambda: self._client.v1.payment_methods.attach_async(payment_method_id, {"customer": customer_id}),
        )

    async def list_cards(self, customer_id: str) -> list[cards.SavedCard]:
        """The cards saved on the Customer (at most 100: more is not a buyer's wallet)."""

        async def listed() -> list[cards.SavedCard]:
            page = await self._client.v1.payment_methods.list_async(
                {"customer": customer_id, "type": "card", "limit": 100}
            )
            found = [cards.facts_of(item.to_dict()) for item in page.data]
            return [f.card for f in found if f.card is not None and f.customer == customer_id]

        return await self._call("payment_methods.list", listed)

    async def delete_customer(self, customer_id: str) -> None:
        """Delete the Customer (account deletion): Stripe detaches every card saved on it; localstripe does not,
        so there they are detached first. PaymentDeclined when Stripe knows no such Customer (already gone)."""
        if self._localstripe:
            for card in await self.list_cards(customer_id):
                await self.detach_payment_method(card.id)
        await self._call("customers.delete", lambda: self._client.v1.customers.delete_async(customer_id))

    async def detach_payment_method(self, payment_method_id: str) -> None:
        """Forget the card at Stripe: it can never be charged again."""
        await self._call(
            "payment_methods.detach",
            lambda: self._client.v1.payment_methods.detach_async(payment_method_id),
        )


def verify_webhook(payload: bytes, signature: str | None, secret: str, tolerance: int) -> dict[str, Any]:
    """The event Stripe signed recently with our secret, or ValueError (bad or stale signature, not a JSON object).

    Only the signature is left to the library: its event parsing fails with other
    errors than ValueError on some signed-but-odd bodies (a JSON array, say).
    """
    try:
        stripe.WebhookSignature.verify_header(payload, signature or "", secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise ValueError(f"bad Stripe signature: {exc.user_message or exc}") from exc
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the event is not JSON") from None
    if not isinstance(event, dict):
        raise ValueError("the event is not a JSON object")
    return event
