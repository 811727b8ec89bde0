"""The only SQL of checkout: `$n` parameters, explicit columns, rows turned into domain objects at once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
from tweetshop_contracts import Envelope
from tweetshop_platform import outbox, read_models

from .domain import Buyer, Order, ProductView, ShippingAddress, TweetView

_PRODUCT_COLUMNS = (
    "id, merchant_id, title, price_minor, currency, stock_available, status, version, units_reserved_total"
)
# The read models of catalog's topics, by the platform's rules (newest version wins; a rotated key wins).
_PRODUCTS = read_models.NewestVersionWins("products", key="id", columns=_PRODUCT_COLUMNS.split(", "))
_MERCHANT_KEYS = read_models.KeyVerifiers("merchants", key="id", key_hash="api_key_hash")
_ORDER_COLUMNS = (
    "id, tweet_id, product_id, merchant_id, quantity, buyer_id, buyer_email, ship_name, ship_line1, ship_city, "
    "ship_country, ship_lat, ship_lon, payment_method, unit_price_minor, amount_minor, currency, status, "
    "correlation_id, created_at, updated_at, stock_reserved, payment_attempts, payment_retries, payment_intent_id, "
    "client_secret, "
    "failure_reason, cancel_reason, refunded_minor, shipment_id, shipment_status, payment_customer, save_card"
)


def _order(row: asyncpg.Record) -> Order:
    return Order(
        id=row["id"],
        tweet_id=row["tweet_id"],
        product_id=row["product_id"],
        merchant_id=row["merchant_id"],
        quantity=row["quantity"],
        buyer=Buyer(id=row["buyer_id"], email=row["buyer_email"]),
        shipping=ShippingAddress(
            name=row["ship_name"],
            line1=row["ship_line1"],
            city=row["ship_city"],
            country=row["ship_country"],
            lat=row["ship_lat"],
            lon=row["ship_lon"],
        ),
        payment_method=row["payment_method"],
        unit_price_minor=row["unit_price_minor"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        status=row["status"],
        correlation_id=row["correlation_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        stock_reserved=row["stock_reserved"],
        payment_attempts=row["payment_attempts"],
        payment_retries=row["payment_retries"],
        payment_intent_id=row["payment_intent_id"],
        client_secret=row["client_secret"],
        failure_reason=row["failure_reason"],
        cancel_reason=row["cancel_reason"],
        refunded_minor=row["refunded_minor"],
        shipment_id=row["shipment_id"],
        shipment_status=row["shipment_status"],
        payment_customer=row["payment_customer"],
        save_card=row["save_card"],
    )


# --- read models -----------------------------------------------------------------------


async def upsert_product(conn: asyncpg.Connection, p: ProductView) -> bool:
    """Keep the newest version of a product; False when ``p`` is older than what is stored (dropped)."""
    return await _PRODUCTS.upsert(conn, p)


def stock_claimed(unanswered: int, heard: int, copy_counts: int | None, reserved_unseen: int) -> int:
    """Units of this checkout's orders that its copy of a product's stock does not show yet
    (``get_product_and_tweet``): ``unanswered`` (pending, not heard reserved) + ``heard`` (reserved units heard of)
    - ``copy_counts`` (catalog's units_reserved_total in the copy), never below zero; without catalog's count, the
    unanswered plus ``reserved_unseen`` (reserved orders placed against the copy's version or a newer one)."""
    if copy_counts is None:
        return unanswered + reserved_unseen
    return max(0, unanswered + heard - copy_counts)


@dataclass(frozen=True)
class PurchaseView:
    """What placing an order reads first: the product (its stock net of this checkout's claims), the tweet, and
    whether the Idempotency-Key already names an order (then the order is a replay: ``get_order_by_key``), and
    whether the PaymentMethod asked about is saved on a buyer's Customer, and which of the buyer, the card or the
    address already has the unpaid-order cap's orders waiting for payment (``unpaid_full``)."""

    product: ProductView | None
    tweet: TweetView | None
    key_used: bool
    saved_card: bool = False
    unpaid_full: str | None = None
    allocation_generation: int | None = None  # of checkout's allocation of the product, if it has one


@dataclass(frozen=True)
class PurchaseAsked:
    """One purchase of a product, as ``get_purchase_views`` reads it: its Idempotency-Key's hash, the
    PaymentMethod to look up among saved cards (None: not asked), and who and where, for the unpaid-order cap."""

    key_hash: str
    saved_card: str | None
    buyer_id: str
    payment_method: str
    line1: str
    city: str
    country: str


_UNPAID_KINDS = ("buyer", "payment_method", "address")


async def get_purchase_views(
    conn: asyncpg.Connection,
    product_id: uuid.UUID,
    tweet_id: uuid.UUID,
    asked: Sequence[PurchaseAsked],
    *,
    quantity: int,
    unpaid_cap: int,
) -> list[PurchaseView]:
    """``get_product``, ``get_tweet``, and for each purchase asked whether its key is taken, whether its card is a
    saved one, and whether it meets the unpaid-order cap (``unpaid_cap`` > 0; 0: not counted), in one round trip
    and no transaction: a refused purchase (sold out, unknown product, a buyer at the cap) costs one statement, and
    a drop's refusals of one product, read together (checkout's ``refusals``), one statement for all of them. The
    product's ``stock_available`` is net of this checkout's own claims on it. The views come in the order asked.

    The purchases asked travel as one JSON array (``json_to_recordset``), not as arrays to ``unnest``: Postgres
    estimates an ``unnest`` of a known array by its length, so every custom plan of a batch of one looked cheaper
    than the generic plan and the statement was planned again at each call (0.44 ms of planning for 0.1 ms of
    work); a JSON array's row estimate is the same whatever it holds, and the generic plan is kept. That estimate
    is 100 rows, though: asked as ``EXISTS``, the key's and the card's lookups were planned as a hash of every
    order built at each call (a sequential scan of ``orders``: a cost that grew with the table). As ``LATERAL``
    lookups with ``LIMIT 1`` they stay one index probe per purchase. And the unpaid-order cap is written into the
    statement as a number, not a parameter: a generic plan guesses a ``LIMIT $n`` at a tenth of the rows, 100
    times over here, so every custom plan looked cheaper and, in a drop, the statement was planned at each call
    again (pg_stat_statements: 0.06 ms of execution, ~0.5 ms of Postgres' CPU per call).

    Catalog owns the stock and decides every reservation; checkout's copy of its count only changes when
    catalog's ProductUpdated arrives, after catalog has reserved. In a drop, thousands of orders are placed
    before then, and each would wait for catalog's refusal (and the buyer with it). So the orders placed here
    that catalog has not answered yet are taken off the copy: a sold-out answer comes at once, from the POST. It
    never oversells (catalog still decides).

    Which orders the copy does not show yet, from two counts of reservations that never go down: catalog's
    (``units_reserved_total`` in its ProductUpdated, as of the copy's version) and checkout's (the StockReserved
    it has applied, ``product_reservations_heard``). The claim is the pending orders not heard reserved, plus
    what was heard reserved, minus what the copy counts:

    - catalog reserved an order, its ProductUpdated arrived, its StockReserved not yet (the two come on two
      topics, and under load either can be seconds behind): the copy shows it, and it is not claimed again
      (before this count it was, and a drop could end with units unsold while buyers were told "sold out");
    - the StockReserved arrived first: heard exceeds the copy's count, and the order is still claimed, so a buyer
      told "sold out" is not accepted a moment later only to be refused by catalog.

    An order reserved here from checkout's allocation (``insert_order``) is unanswered until its StockReserved is
    heard, whatever its status: catalog counts it in ``units_reserved_total`` only once it has read its OrderPlaced.
    The units left in the allocation are always there: the product is never refused below them. They are counted
    only up to ``quantity`` (the most units any purchase asked for wants: a row per unit, and a product with
    thousands allocated would otherwise cost every purchase that many rows read); below it the count is exact, so
    the decision and the "only N left" it gives are the same as with a full count.

    The difference is never below zero (an order cancelled before its reservation was heard counts at catalog
    only: for a moment one more unit may look free, and catalog refuses what does not fit). With a copy from a
    catalog older than contract 1.3.0 (no count) the rule before it: reserved orders count until the copy is newer
    than the version they were placed against (``stock_version_seen``).
    """
    if not asked:
        return []
    product_columns = ", ".join(f"p.{c.strip()}" for c in _PRODUCT_COLUMNS.split(","))
    cap = int(unpaid_cap)  # a validated setting (0 to 1,000), written into the statement: see above
    if cap > 0:
        unpaid = "(SELECT count(*) FROM (SELECT 1 FROM orders u WHERE u.status IN ('pending', 'requires_action') AND {}"
        unpaid_columns = ",\n".join(
            f"{unpaid.format(where)} LIMIT {cap}) n) AS unpaid_{kind}"
            for kind, where in (
                ("buyer", "u.buyer_id = q.buyer_id"),
                ("payment_method", "u.payment_method = q.payment_method"),
                (
                    "address",
                    "u.ship_country = q.country AND lower(u.ship_city) = lower(q.city) "
                    "AND lower(u.ship_line1) = lower(q.line1)",
                ),
            )
        )
    else:
        unpaid_columns = ", ".join(f"NULL::bigint AS unpaid_{kind}" for kind in _UNPAID_KINDS)
    rows = await conn.fetch(
        f"""WITH one AS MATERIALIZED (
              SELECT {product_columns}, t.tweet_id, t.product_id AS tweet_product_id,
                     t.merchant_id AS tweet_merchant_id,
                     (SELECT coalesce(sum(o.quantity), 0) FROM orders o
                      WHERE o.product_id = $1 AND o.status = 'pending' AND NOT o.stock_reserved)
                     + (SELECT coalesce(sum(o.quantity), 0) FROM orders o
                        WHERE o.product_id = $1 AND o.allocation_generation IS NOT NULL AND NOT o.reservation_heard)
                       AS unanswered,
                     (SELECT count(*) FROM (SELECT FROM stock_allocation_units a WHERE a.product_id = $1 LIMIT $3) a)
                       AS allocated_left,
                     CASE WHEN p.units_reserved_total IS NULL THEN
                          (SELECT coalesce(sum(o.quantity), 0) FROM orders o
                           WHERE o.product_id = $1 AND o.stock_reserved AND o.stock_version_seen >= p.version)
                     END AS reserved_unseen,
                     (SELECT h.units FROM product_reservations_heard h WHERE h.product_id = $1) AS heard,
                     (SELECT s.generation FROM stock_allocations s WHERE s.product_id = $1) AS allocation_generation
              FROM (SELECT 1) AS one
              LEFT JOIN products p ON p.id = $1
              LEFT JOIN buyable_tweets t ON t.tweet_id = $2)
           SELECT one.*, k.found IS NOT NULL AS key_used, c.found IS NOT NULL AS saved_card, {unpaid_columns}
           FROM json_to_recordset($4::text::json)
                AS q(i int, key_hash text, saved_card text, buyer_id text, payment_method text, line1 text,
                     city text, country text)
           CROSS JOIN one
           LEFT JOIN LATERAL (SELECT 1 AS found FROM orders k WHERE k.idempotency_key_hash = q.key_hash LIMIT 1) k
                  ON true
           LEFT JOIN LATERAL (SELECT 1 AS found FROM orders c
                              WHERE c.payment_method = q.saved_card AND c.payment_customer IS NOT NULL LIMIT 1) c
                  ON true
           ORDER BY q.i""",
        product_id,
        tweet_id,
        quantity,
        json.dumps([{"i": i, **vars(a)} for i, a in enumerate(asked)]),
    )
    assert len(rows) == len(asked)
    first = rows[0]
    product = ProductView(**{c.strip(): first[c.strip()] for c in _PRODUCT_COLUMNS.split(",")}) if first["id"] else None
    if product is not None:
        claimed = stock_claimed(
            first["unanswered"], first["heard"] or 0, product.units_reserved_total, first["reserved_unseen"] or 0
        )
        # What the order can take from the allocation is certainly there (taken in the order's transaction).
        available = max(product.stock_available - claimed, first["allocated_left"] or 0, 0)
        if available != product.stock_available:
            product = replace(product, stock_available=available)
    tweet = (
        TweetView(
            tweet_id=first["tweet_id"], product_id=first["tweet_product_id"], merchant_id=first["tweet_merchant_id"]
        )
        if first["tweet_id"]
        else None
    )
    return [
        PurchaseView(
            product,
            tweet,
            key_used=row["key_used"],
            saved_card=row["saved_card"],
            unpaid_full=next((kind for kind in _UNPAID_KINDS if cap > 0 and row[f"unpaid_{kind}"] >= cap), None),
            allocation_generation=row["allocation_generation"],
        )
        for row in rows
    ]


async def count_reservation_heard(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    """Catalog's StockReserved for this order applied: its units join its product's heard count
    (``get_product_and_tweet``), once per order, whatever StockReserved comes for it again."""
    await conn.execute(
        """WITH heard AS (
               UPDATE orders SET reservation_heard = true WHERE id = $1 AND NOT reservation_heard
               RETURNING product_id, quantity)
           INSERT INTO product_reservations_heard AS h (product_id, units)
           SELECT product_id, quantity FROM heard
           ON CONFLICT (product_id) DO UPDATE SET units = h.units + EXCLUDED.units""",
        order_id,
    )


async def lock_orders_hearing_reservations(
    conn: asyncpg.Connection, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Order]:
    """``get_order(for_update=True)`` and ``count_reservation_heard`` for several orders, in one statement: each
    order is locked (in id order, as every statement that locks several orders does), marked heard once and its
    units counted to its product's heard count. Returns the orders found, as they were before."""
    rows = await conn.fetch(
        f"""WITH locked AS MATERIALIZED (
                SELECT {_ORDER_COLUMNS}, reservation_heard FROM orders
                WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE),
            heard AS (
                UPDATE orders o SET reservation_heard = true FROM locked
                WHERE o.id = locked.id AND NOT locked.reservation_heard
                RETURNING o.product_id, o.quantity),
            counted AS (
                INSERT INTO product_reservations_heard AS h (product_id, units)
                SELECT product_id, sum(quantity) FROM heard GROUP BY product_id
                ON CONFLICT (product_id) DO UPDATE SET units = h.units + EXCLUDED.units)
            SELECT * FROM locked""",
        list(dict.fromkeys(order_ids)),
    )
    return {row["id"]: _order(row) for row in rows}


async def upsert_tweet(conn: asyncpg.Connection, tweet: TweetView, posted_at: datetime) -> None:
    await conn.execute(
        """INSERT INTO buyable_tweets (tweet_id, product_id, merchant_id, posted_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (tweet_id) DO NOTHING""",
        tweet.tweet_id,
        tweet.product_id,
        tweet.merchant_id,
        posted_at,
    )


# --- orders ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IdempotentOrder:
    """An order found by its Idempotency-Key, with what a replay needs."""

    order: Order
    request_hash: str
    access_token_sealed: str


async def get_order_by_key(conn: asyncpg.Connection, key_hash: str) -> IdempotentOrder | None:
    row = await conn.fetchrow(
        f"SELECT {_ORDER_COLUMNS}, request_hash, access_token_sealed FROM orders WHERE idempotency_key_hash = $1",
        key_hash,
    )
    if row is None:
        return None
    return IdempotentOrder(_order(row), row["request_hash"], row["access_token_sealed"])


class KeyTaken(Exception):
    """An order with this Idempotency-Key exists (a concurrent twin won; its row is visible now)."""


async def insert_order(
    conn: asyncpg.Connection,
    o: Order,
    *,
    key_hash: str,
    request_hash: str,
    token_hash: str,
    token_sealed: str,
    placed: Envelope,
    stock_version_seen: int | None = None,
    allocation_generation: int | None = None,
    placed_from_allocation: Envelope | None = None,
    account: tuple[str, str] | None = None,
    lease_s: float | None = None,
) -> Inserted:
    """The new order's row and its OrderPlaced, in one statement (no transaction around it: both or neither).
    Raises KeyTaken, and writes nothing, when an order with this Idempotency-Key exists.

    The order's units are taken from checkout's allocation of the product in the same statement when generation
    ``allocation_generation`` of it has enough (``stock_allocation_units``, one row per unit): the order is then
    reserved and due for payment at once, and its OrderPlaced is ``placed_from_allocation`` instead of ``placed``.
    Units another order's statement holds are skipped (``FOR UPDATE SKIP LOCKED``), so orders never queue on one
    another; units are taken all from that generation or not at all (a generation's replacement deletes the old
    units in one statement: an order placed against a generation just replaced goes to catalog, as one beyond the
    allocation does). ``stock_version_seen``: the version of checkout's copy of the product when the order was
    placed; the order counts against that copy until a newer version arrives (``get_product_and_tweet``).
    ``account``: the buyer account the order belongs to and its access token sealed with the buyer's vault key.

    ``lease_s``: an order that takes its units from the allocation is inserted as ``claim_due_payments`` would
    leave it, leased to this process for ``lease_s`` seconds with its first creation attempt counted, and is
    returned as claimed (``Inserted.claimed``): the caller hands it to its payment worker, which then needs no
    claim. If the process dies first, the lease runs out and any worker claims it as usual (the second attempt
    then looks for an intent at Stripe before creating one). Without ``lease_s`` the order is due at once and
    waits for a claim.
    """
    events: list[Envelope] = [placed]
    if placed_from_allocation is not None:
        events.append(placed_from_allocation)
    try:
        row = await outbox.write_then_enqueue(
            conn,
            f"""INSERT INTO orders (id, idempotency_key_hash, request_hash, access_token_hash, access_token_sealed,
                   tweet_id, product_id, merchant_id, quantity, buyer_id, buyer_email, ship_name, ship_line1,
                   ship_city, ship_country, ship_lat, ship_lon, payment_method, unit_price_minor, amount_minor,
                   currency, status, correlation_id, created_at, updated_at, payment_customer, save_card,
                   stock_version_seen, buyer_account, access_token_vaulted, allocation_generation, stock_reserved,
                   payment_due_at, payment_attempts)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                   $21, $22, $23, $24, $25, $26, $27, $28, $30, $31, (SELECT max(generation) FROM taken),
                   EXISTS (SELECT 1 FROM taken),
                   CASE WHEN EXISTS (SELECT 1 FROM taken)
                       THEN now() + make_interval(secs => coalesce($32::float8, 0)) END,
                   CASE WHEN $32::float8 IS NOT NULL AND EXISTS (SELECT 1 FROM taken) THEN 1 ELSE 0 END)
               RETURNING allocation_generation, (allocation_generation IS NOT NULL)::int AS variant,
                   {_ORDER_COLUMNS}, {_PAYMENT_STATE.format(p="")} AS payment_state""",
            [
                o.id,
                key_hash,
                request_hash,
                token_hash,
                token_sealed,
                o.tweet_id,
                o.product_id,
                o.merchant_id,
                o.quantity,
                o.buyer.id,
                o.buyer.email,
                o.shipping.name,
                o.shipping.line1,
                o.shipping.city,
                o.shipping.country,
                o.shipping.lat,
                o.shipping.lon,
                o.payment_method,
                o.unit_price_minor,
                o.amount_minor,
                o.currency,
                o.status,
                o.correlation_id,
                o.created_at,
                o.updated_at,
                o.payment_customer,
                o.save_card,
                stock_version_seen,
                allocation_generation if placed_from_allocation is not None else None,
                *(account or (None, None)),
                lease_s,
            ],
            events,
            variants=list(range(len(events))),
            before="""picked AS MATERIALIZED (
                   SELECT id FROM stock_allocation_units WHERE product_id = $7 AND generation = $29
                   LIMIT $9 FOR UPDATE SKIP LOCKED),
               taken AS (
                   DELETE FROM stock_allocation_units
                   WHERE id IN (SELECT id FROM picked) AND (SELECT count(*) = $9 FROM picked)
                   RETURNING generation)""",
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "orders_idempotency_key_hash_key":
            raise KeyTaken from exc
        raise
    assert row is not None  # an INSERT ... VALUES returns its row or raises
    # Leased when asked to and its units came from the allocation (the statement leases only those).
    leased = lease_s is not None and row["allocation_generation"] is not None
    claimed = ClaimedOrder(_order(row), False, row["payment_state"], token_hash) if leased else None
    return Inserted(row["allocation_generation"], claimed)


@dataclass(frozen=True)
class Inserted:
    """A new order's row: ``allocation_generation`` set when its units came from checkout's allocation;
    ``claimed``: the order as leased to this process (``insert_order``'s ``lease_s``), else None."""

    allocation_generation: int | None
    claimed: ClaimedOrder | None = None


async def apply_allocation(
    conn: asyncpg.Connection, product_id: uuid.UUID, generation: int, units: int
) -> tuple[int, int] | None:
    """Catalog's StockAllocated: a higher generation replaces the allocation, the same one adds to it, a lower one
    is stale (the same result in any order of delivery; the inbox applies each event once). What checkout must
    give back, as (generation, units): what a replaced generation had left, or a stale event's units; None when
    nothing.

    The product's row in ``stock_allocations`` (the generation in force) is locked first, so allocations of one
    product apply one after the other. Deleting a replaced generation's units waits for orders holding one of
    them: a unit such an order took is gone when it commits (the order has it), and one it did not take is
    given back."""
    row = await conn.fetchrow(
        """WITH old AS MATERIALIZED (
               SELECT generation FROM stock_allocations WHERE product_id = $1 FOR UPDATE),
           upserted AS (
               INSERT INTO stock_allocations AS a (product_id, generation) VALUES ($1, $2)
               ON CONFLICT (product_id) DO UPDATE SET
                   generation = greatest(a.generation, EXCLUDED.generation), updated_at = now()),
           dropped AS (
               DELETE FROM stock_allocation_units
               WHERE product_id = $1 AND generation < $2 AND EXISTS (SELECT 1 FROM old)
               RETURNING 1),
           added AS (
               INSERT INTO stock_allocation_units (product_id, generation)
               SELECT $1, $2 FROM generate_series(1, $3)
               WHERE $2 >= coalesce((SELECT generation FROM old), $2))
           SELECT (SELECT generation FROM old) AS generation, (SELECT count(*) FROM dropped) AS dropped""",
        product_id,
        generation,
        units,
    )
    assert row is not None
    if row["generation"] is None:
        return None
    if generation > row["generation"] and row["dropped"]:
        return row["generation"], row["dropped"]
    if generation < row["generation"] and units:
        return generation, units
    return None


async def get_order(conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
    """One order; ``for_update`` locks it until the transaction ends (the worker and webhooks queue here)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = $1{lock}", order_id)
    return _order(row) if row else None


async def webhook_precheck(
    conn: asyncpg.Connection, stripe_event_id: str, order_id: uuid.UUID
) -> tuple[bool, str | None, str | None]:
    """Whether a Stripe event was recorded already, and the order's status and PaymentIntent id (one read)."""
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM stripe_events WHERE event_id = $1) AS seen, o.status, o.payment_intent_id
           FROM (SELECT 1) AS one LEFT JOIN orders o ON o.id = $2""",
        stripe_event_id,
        order_id,
    )
    assert row is not None
    return bool(row["seen"]), row["status"], row["payment_intent_id"]


async def get_order_id_by_intent(conn: asyncpg.Connection, payment_intent_id: str) -> uuid.UUID | None:
    order_id: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM orders WHERE payment_intent_id = $1", payment_intent_id
    )
    return order_id


async def record_merchant_key(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key_hash: str | None, *, rotated: bool
) -> None:
    """The merchant's API key hash: a registration sets it only while none is stored, a rotation always."""
    await _MERCHANT_KEYS.record(conn, merchant_id, api_key_hash, rotated=rotated)


async def get_merchant_key_hash(conn: asyncpg.Connection, merchant_id: uuid.UUID) -> str | None:
    found: str | None = await conn.fetchval("SELECT api_key_hash FROM merchants WHERE id = $1", merchant_id)
    return found


async def get_order_for_payment(conn: asyncpg.Connection, order_id: uuid.UUID) -> tuple[Order, str | None] | None:
    """The order, locked until the transaction ends, with its access token's hash (one round trip)."""
    return await get_order_and_token_hash(conn, order_id, for_update=True)


async def get_order_and_token_hash(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False
) -> tuple[Order, str] | None:
    """One order and the hash of its access token, in one statement (the order page checks the token against it
    and shows the order only when it matches); ``for_update`` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS}, access_token_hash FROM orders WHERE id = $1{lock}", order_id)
    return (_order(row), row["access_token_hash"]) if row else None


async def get_access_token_hash(conn: asyncpg.Connection, order_id: uuid.UUID) -> str | None:
    token_hash: str | None = await conn.fetchval("SELECT access_token_hash FROM orders WHERE id = $1", order_id)
    return token_hash


_KEEP_SCHEDULE = object()


_SAVE_ORDER = """UPDATE orders SET status = $2, stock_reserved = $3, payment_intent_id = $4, client_secret = $5,
        failure_reason = $6, cancel_reason = $7, refunded_minor = $8, shipment_id = $9, shipment_status = $10,
        updated_at = $11, payment_retries = $12,
        payment_due_at = CASE WHEN NOT $13::bool THEN payment_due_at
                              WHEN $14::float8 IS NULL THEN NULL
                              ELSE now() + make_interval(secs => $14::float8) END
    WHERE id = $1"""


def _save_arguments(o: Order, next_payment_step_in: object) -> list[object]:
    schedule = next_payment_step_in is not _KEEP_SCHEDULE
    delay = next_payment_step_in if schedule else None
    if delay is not None and not isinstance(delay, int | float):
        raise TypeError(f"next_payment_step_in: seconds or None, not {delay!r}")
    return [
        o.id,
        o.status,
        o.stock_reserved,
        o.payment_intent_id,
        o.client_secret,
        o.failure_reason,
        o.cancel_reason,
        o.refunded_minor,
        o.shipment_id,
        o.shipment_status,
        o.updated_at,
        o.payment_retries,
        schedule,
        None if delay is None else float(delay),
    ]


async def save_order(conn: asyncpg.Connection, o: Order, *, next_payment_step_in: object = _KEEP_SCHEDULE) -> None:
    """Write what a transition may change; with ``next_payment_step_in`` (seconds, or None for never), also
    ``schedule_payment`` in the same statement."""
    await conn.execute(_SAVE_ORDER, *_save_arguments(o, next_payment_step_in))


async def save_order_if_unchanged(
    conn: asyncpg.Connection,
    o: Order,
    version: str,
    events: Sequence[Envelope],
    *,
    next_payment_step_in: object = _KEEP_SCHEDULE,
) -> bool:
    """``save_order`` and ``events`` into the outbox, in one statement, only if the order is still as the version
    ``version`` says (``claim_due_payments`` returns it): a compare-and-set, with no lock held before it and no
    transaction needed around it. False, and nothing written, if anything it covers changed since (or the order is
    gone): see ``_PAYMENT_STATE``."""
    written = await outbox.write_then_enqueue(
        conn,
        _SAVE_ORDER_IF_UNCHANGED,
        [*_save_arguments(o, next_payment_step_in), version],
        events,
    )
    return written is not None


async def undo_payment_attempt(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    """Give back the creation attempt a claim counted, when Stripe refused it before acting (a rate limit)."""
    await conn.execute(
        "UPDATE orders SET payment_attempts = payment_attempts - 1 WHERE id = $1 AND payment_attempts > 0", order_id
    )


async def schedule_payment(conn: asyncpg.Connection, order_id: uuid.UUID, delay_s: float | None) -> None:
    """When the payment worker should look at the order next (None: never again)."""
    if delay_s is None:
        await conn.execute("UPDATE orders SET payment_due_at = NULL WHERE id = $1", order_id)
    else:
        await conn.execute(
            "UPDATE orders SET payment_due_at = now() + make_interval(secs => $2) WHERE id = $1", order_id, delay_s
        )


_RETURNING_ORDER = ", ".join("o." + c.strip() for c in _ORDER_COLUMNS.split(","))

# The version of an order as a payment decision sees it: a digest of every column of ``Order`` (what
# ``domain.decide_payment`` and the events it makes read, and all ``save_order`` writes), its access token's hash
# (in OrderPaid) and its payment lease. Not the row's ``xmin``: writes that touch none of these (the reservations
# consumer marking an allocation order's StockReserved heard, which lands during its Stripe call more often than
# not) leave the decision as it was, and ``save_order`` writes none of their columns. ``{p}``: a table alias and
# a dot, or nothing.
_PAYMENT_STATE = (
    "md5(ROW("
    + ", ".join("{p}" + c.strip() for c in _ORDER_COLUMNS.split(","))
    + ", {p}access_token_hash, {p}payment_due_at)::text)"
)
_SAVE_ORDER_IF_UNCHANGED = f"{_SAVE_ORDER} AND {_PAYMENT_STATE.format(p='')} = $15 RETURNING id"


@dataclass(frozen=True)
class ClaimedOrder:
    """An order leased by ``claim_due_payments``: as the claim left it, whether it is past its deadline, its
    version as a payment decision sees it (``_PAYMENT_STATE``, for ``save_order_if_unchanged``) and its access
    token's hash."""

    order: Order
    overdue: bool
    version: str
    access_hash: str | None


async def claim_due_payments(
    conn: asyncpg.Connection, limit: int, lease_s: float, deadline_s: float, action_deadline_s: float
) -> list[ClaimedOrder]:
    """Take up to ``limit`` due orders for this worker for ``lease_s`` seconds; other workers skip them.

    Each comes with whether it is past its deadline (by the database's clock, the only one
    every replica shares): ``deadline_s`` after it was placed, or the shorter ``action_deadline_s``
    while it waits for the buyer's 3-D Secure. A PaymentIntent creation attempt is counted here for an order
    still in time, committed before Stripe is called, so a crash after the call is known on
    the next try (which then looks for the intent first). An order past its deadline gets
    no new attempt: it is only ended, from Stripe's truth.
    """
    rows = await conn.fetch(
        f"""WITH due AS (
                SELECT id FROM orders
                WHERE payment_due_at <= now() AND status IN ('pending', 'requires_action')
                ORDER BY payment_due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
            UPDATE orders o SET payment_due_at = now() + make_interval(secs => $2),
                payment_attempts = o.payment_attempts
                    + CASE WHEN o.payment_intent_id IS NULL AND o.status = 'pending'
                           AND o.created_at > now() - make_interval(secs => $3) THEN 1 ELSE 0 END
            FROM due WHERE o.id = due.id
            RETURNING {_RETURNING_ORDER}, o.created_at <= now() - make_interval(
                secs => CASE WHEN o.status = 'requires_action' THEN $4::float8 ELSE $3::float8 END) AS overdue,
                {_PAYMENT_STATE.format(p="o.")} AS payment_state, o.access_token_hash""",
        limit,
        lease_s,
        deadline_s,
        action_deadline_s,
    )
    return [ClaimedOrder(_order(r), bool(r["overdue"]), r["payment_state"], r["access_token_hash"]) for r in rows]


_OVERDUE = """((status = 'pending' AND created_at <= now() - make_interval(secs => $DEADLINE))
    OR (status = 'requires_action' AND created_at <= now() - make_interval(secs => $ACTION)))"""


def _overdue(deadline: int, action: int) -> str:
    """Orders still waiting for their payment past their deadline ($n parameters of the two deadlines)."""
    return _OVERDUE.replace("$DEADLINE", f"${deadline}").replace("$ACTION", f"${action}")


async def claim_overdue_orders(
    conn: asyncpg.Connection, limit: int, lease_s: float, deadline_s: float, action_deadline_s: float
) -> list[Order]:
    """Orders still waiting for their payment past the deadline and leased to no one: leased to the reconciler.

    An order leased by a payment step (``payment_due_at`` ahead) is left alone until its lease
    ends, so the reconciler never decides while a PaymentIntent may be in creation.
    """
    rows = await conn.fetch(
        f"""WITH overdue AS (
                SELECT id FROM orders
                WHERE {_overdue(3, 4)}
                    AND (payment_due_at IS NULL OR payment_due_at <= now())
                ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)
            UPDATE orders o SET payment_due_at = now() + make_interval(secs => $2)
            FROM overdue WHERE o.id = overdue.id
            RETURNING {_RETURNING_ORDER}""",
        limit,
        lease_s,
        deadline_s,
        action_deadline_s,
    )
    return [_order(r) for r in rows]


async def count_overdue_orders(conn: asyncpg.Connection, deadline_s: float, action_deadline_s: float) -> int:
    """Orders still waiting for their payment past the deadline (should drop to 0 after each reconciler run)."""
    count = await conn.fetchval(f"SELECT count(*) FROM orders WHERE {_overdue(1, 2)}", deadline_s, action_deadline_s)
    return int(count)


async def set_shipment(
    conn: asyncpg.Connection, order_id: uuid.UUID, shipment_id: uuid.UUID, shipment_status: str
) -> bool:
    """Remember the order's shipment; False when the order is not ours."""
    updated = await conn.fetchval(
        """UPDATE orders SET shipment_id = $2, shipment_status = $3, updated_at = now() WHERE id = $1
           RETURNING true""",
        order_id,
        shipment_id,
        shipment_status,
    )
    return bool(updated)


async def set_shipments(
    conn: asyncpg.Connection, shipments: Sequence[tuple[uuid.UUID, uuid.UUID, str]]
) -> set[uuid.UUID]:
    """``set_shipment`` for several (order id, shipment id, status), in one statement; as in turn, the last one
    given for an order is what it keeps. The orders are locked in id order first, as every statement that locks
    several orders does (no deadlock between two of them). Returns the orders that are ours."""
    last = {order_id: (shipment_id, status) for order_id, shipment_id, status in shipments}
    rows = await conn.fetch(
        """WITH locked AS MATERIALIZED (SELECT id FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE)
           UPDATE orders o SET shipment_id = s.shipment_id, shipment_status = s.status, updated_at = now()
           FROM locked JOIN unnest($1::uuid[], $2::uuid[], $3::text[]) AS s(order_id, shipment_id, status)
                ON s.order_id = locked.id
           WHERE o.id = locked.id
           RETURNING o.id""",
        list(last),
        [shipment_id for shipment_id, _ in last.values()],
        [status for _, status in last.values()],
    )
    return {row["id"] for row in rows}


# --- refunds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundRow:
    id: uuid.UUID
    order_id: uuid.UUID
    amount_minor: int
    status: str
    stripe_refund_id: str | None


_REFUND_COLUMNS = "id, order_id, amount_minor, status, stripe_refund_id"


async def refunds_in_flight_minor(conn: asyncpg.Connection, order_id: uuid.UUID) -> int:
    """Amount of refunds asked of Stripe whose answer is not recorded yet."""
    total = await conn.fetchval(
        "SELECT coalesce(sum(amount_minor), 0) FROM refunds WHERE order_id = $1 AND status = 'requested'", order_id
    )
    return int(total)


async def insert_refund(
    conn: asyncpg.Connection, refund_id: uuid.UUID, order_id: uuid.UUID, amount_minor: int, recheck_after_s: float
) -> None:
    await conn.execute(
        """INSERT INTO refunds (id, order_id, amount_minor, status, recheck_at)
           VALUES ($1, $2, $3, 'requested', now() + make_interval(secs => $4))""",
        refund_id,
        order_id,
        amount_minor,
        recheck_after_s,
    )


async def get_refund(conn: asyncpg.Connection, refund_id: uuid.UUID, *, for_update: bool = False) -> RefundRow | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE id = $1{lock}", refund_id)
    return RefundRow(**dict(row.items())) if row else None


async def finish_refund(
    conn: asyncpg.Connection,
    refund_id: uuid.UUID,
    status: str,
    stripe_refund_id: str | None = None,
    failure_reason: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE refunds SET status = $2, stripe_refund_id = coalesce($3, stripe_refund_id), failure_reason = $4,
               updated_at = now()
           WHERE id = $1""",
        refund_id,
        status,
        stripe_refund_id,
        failure_reason,
    )


async def claim_stale_refunds(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[RefundRow]:
    """Requested refunds whose answer was lost, for this worker for ``lease_s`` seconds."""
    rows = await conn.fetch(
        f"""WITH due AS (
                SELECT id FROM refunds WHERE status = 'requested' AND recheck_at <= now()
                ORDER BY recheck_at LIMIT $1 FOR UPDATE SKIP LOCKED)
            UPDATE refunds r SET recheck_at = now() + make_interval(secs => $2)
            FROM due WHERE r.id = due.id
            RETURNING {", ".join("r." + c.strip() for c in _REFUND_COLUMNS.split(","))}""",
        limit,
        lease_s,
    )
    return [RefundRow(**dict(r.items())) for r in rows]


# --- Stripe events ---------------------------------------------------------------------


async def record_stripe_event(
    conn: asyncpg.Connection, event_id: str, event_type: str, order_id: uuid.UUID | None
) -> bool:
    """Record a Stripe event once; False when it was seen before."""
    inserted = await conn.fetchval(
        """INSERT INTO stripe_events (event_id, event_type, order_id) VALUES ($1, $2, $3)
           ON CONFLICT (event_id) DO NOTHING RETURNING true""",
        event_id,
        event_type,
        order_id,
    )
    return bool(inserted)


# --- payments that may not move their order --------------------------------------------


async def record_payment_mismatch(
    conn: asyncpg.Connection,
    order_id: uuid.UUID,
    payment_intent_id: str,
    reason: str,
    source: str,
    outcome: str,
    *,
    amount_minor: int | None,
    currency: str | None,
    livemode: bool | None,
) -> bool:
    """Keep a mismatch for an operator; True the first time this (order, intent, reason, source) is seen."""
    first: bool = await conn.fetchval(
        """INSERT INTO payment_mismatches AS m (order_id, payment_intent_id, reason, source, outcome,
                intent_amount_minor, intent_currency, intent_livemode)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (order_id, payment_intent_id, reason, source) DO UPDATE
               SET last_seen_at = now(), times_seen = m.times_seen + 1, outcome = EXCLUDED.outcome
           RETURNING m.times_seen = 1""",
        order_id,
        payment_intent_id[:255],
        reason,
        source,
        outcome,
        amount_minor,
        currency[:16] if currency is not None else None,
        livemode,
    )
    return first


@dataclass(frozen=True)
class PaymentMismatchRow:
    order_id: uuid.UUID
    payment_intent_id: str
    reason: str
    source: str
    outcome: str
    intent_amount_minor: int | None
    intent_currency: str | None
    intent_livemode: bool | None
    first_seen_at: datetime
    last_seen_at: datetime
    times_seen: int


async def list_payment_mismatches(conn: asyncpg.Connection, limit: int) -> list[PaymentMismatchRow]:
    """The most recently seen mismatches, newest first."""
    rows = await conn.fetch(
        """SELECT order_id, payment_intent_id, reason, source, outcome, intent_amount_minor, intent_currency,
                  intent_livemode, first_seen_at, last_seen_at, times_seen
           FROM payment_mismatches ORDER BY last_seen_at DESC LIMIT $1""",
        limit,
    )
    return [PaymentMismatchRow(**dict(r.items())) for r in rows]


# --- buyer accounts --------------------------------------------------------------------


async def insert_buyer(conn: asyncpg.Connection, buyer_id: str, token_hash: str, vault_sealed: str) -> datetime:
    """A new buyer and its first credential; when it was created."""
    created_at: datetime = await conn.fetchval("INSERT INTO buyers (id) VALUES ($1) RETURNING created_at", buyer_id)
    await insert_credential(conn, buyer_id, token_hash, vault_sealed)
    return created_at


async def insert_credential(conn: asyncpg.Connection, buyer_id: str, token_hash: str, vault_sealed: str) -> None:
    await conn.execute(
        "INSERT INTO buyer_credentials (token_hash, buyer_id, vault_sealed) VALUES ($1, $2, $3)",
        token_hash,
        buyer_id,
        vault_sealed,
    )


@dataclass(frozen=True)
class BuyerRow:
    """The buyer a credential stands for, with what that credential opens."""

    id: str
    created_at: datetime
    vault_sealed: str
    devices: int


async def buyer_by_credential(conn: asyncpg.Connection, token_hash: str) -> BuyerRow | None:
    """The buyer of a live credential (found by its hash), or None when it is unknown or revoked."""
    row = await conn.fetchrow(
        """SELECT b.id, b.created_at, c.vault_sealed,
                  (SELECT count(*) FROM buyer_credentials d WHERE d.buyer_id = b.id) AS devices
           FROM buyer_credentials c JOIN buyers b ON b.id = c.buyer_id
           WHERE c.token_hash = $1""",
        token_hash,
    )
    return BuyerRow(row["id"], row["created_at"], row["vault_sealed"], int(row["devices"])) if row else None


async def credential_hashes(conn: asyncpg.Connection, buyer_id: str) -> list[str]:
    """The hashes of the buyer's live credentials, with the buyer's row locked until the transaction ends: no device
    is linked meanwhile (a new credential's foreign key waits for the lock), so what is revoked next is exactly
    what is announced."""
    await conn.execute("SELECT 1 FROM buyers WHERE id = $1 FOR UPDATE", buyer_id)
    rows = await conn.fetch(
        "SELECT token_hash FROM buyer_credentials WHERE buyer_id = $1 ORDER BY created_at, token_hash", buyer_id
    )
    return [r["token_hash"] for r in rows]


async def revoke_credentials(conn: asyncpg.Connection, buyer_id: str) -> int:
    """Every credential and link code of the buyer gone; how many credentials there were."""
    await conn.execute("DELETE FROM buyer_link_codes WHERE buyer_id = $1", buyer_id)
    revoked = await conn.fetch("DELETE FROM buyer_credentials WHERE buyer_id = $1 RETURNING 1", buyer_id)
    return len(revoked)


async def replace_link_code(
    conn: asyncpg.Connection, buyer_id: str, handle: str, code_hash: str, vault_sealed: str, expires_at: datetime
) -> bool:
    """The buyer's one live link code is now this one (expired codes of anyone are cleared on the way); False
    when another buyer's live code has the same handle (draw again)."""
    await conn.execute("DELETE FROM buyer_link_codes WHERE buyer_id = $1 OR expires_at <= now()", buyer_id)
    inserted = await conn.fetchval(
        """INSERT INTO buyer_link_codes (handle, buyer_id, code_hash, vault_sealed, expires_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (handle) DO NOTHING RETURNING true""",
        handle,
        buyer_id,
        code_hash,
        vault_sealed,
        expires_at,
    )
    return bool(inserted)


@dataclass(frozen=True)
class LinkCodeRow:
    buyer_id: str
    code_hash: str
    vault_sealed: str
    failed_attempts: int
    expires_at: datetime


async def take_link_code(conn: asyncpg.Connection, handle: str) -> LinkCodeRow | None:
    """The live code with this handle, locked until the transaction ends (guesses at one code queue here)."""
    row = await conn.fetchrow(
        """SELECT buyer_id, code_hash, vault_sealed, failed_attempts, expires_at
           FROM buyer_link_codes WHERE handle = $1 FOR UPDATE""",
        handle,
    )
    return LinkCodeRow(**dict(row.items())) if row else None


async def delete_link_code(conn: asyncpg.Connection, handle: str) -> None:
    await conn.execute("DELETE FROM buyer_link_codes WHERE handle = $1", handle)


async def count_link_code_failure(conn: asyncpg.Connection, handle: str) -> int:
    """One more wrong guess at the code; how many it has had."""
    failures: int = await conn.fetchval(
        "UPDATE buyer_link_codes SET failed_attempts = failed_attempts + 1 WHERE handle = $1 RETURNING failed_attempts",
        handle,
    )
    return failures


async def get_order_account(conn: asyncpg.Connection, order_id: uuid.UUID) -> tuple[str | None, str | None] | None:
    """The order's account and vaulted access token, or None when there is no such order."""
    row = await conn.fetchrow("SELECT buyer_account, access_token_vaulted FROM orders WHERE id = $1", order_id)
    return (row["buyer_account"], row["access_token_vaulted"]) if row else None


async def orders_of_account(
    conn: asyncpg.Connection, buyer_id: str, *, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[tuple[Order, str | None]]:
    """The account's orders newest first (strictly older than ``before``), each with its vaulted access token."""
    if before is None:
        rows = await conn.fetch(
            f"""SELECT {_ORDER_COLUMNS}, access_token_vaulted FROM orders WHERE buyer_account = $1
                ORDER BY created_at DESC, id DESC LIMIT $2""",
            buyer_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"""SELECT {_ORDER_COLUMNS}, access_token_vaulted FROM orders
                WHERE buyer_account = $1 AND (created_at, id) < ($3, $4)
                ORDER BY created_at DESC, id DESC LIMIT $2""",
            buyer_id,
            limit,
            before[0],
            before[1],
        )
    return [(_order(r), r["access_token_vaulted"]) for r in rows]


# --- saved cards: the buyer's Stripe Customer --------------------------------------------------------------


async def buyer_stripe_customer(conn: asyncpg.Connection, buyer_id: str) -> str | None:
    """The buyer's Stripe Customer, or None when none is recorded yet."""
    found: str | None = await conn.fetchval("SELECT stripe_customer_id FROM buyers WHERE id = $1", buyer_id)
    return found


async def count_stripe_customer_attempt(conn: asyncpg.Connection, buyer_id: str) -> tuple[str | None, int]:
    """Before a call to Stripe that may create the buyer's Customer: the Customer recorded meanwhile (then nothing
    is counted), else how many attempts came before this one (one more is counted)."""
    row = await conn.fetchrow(
        "SELECT stripe_customer_id, stripe_customer_attempts FROM buyers WHERE id = $1 FOR UPDATE", buyer_id
    )
    if row is None or row["stripe_customer_id"] is not None:
        return (row["stripe_customer_id"] if row else None), 0
    await conn.execute(
        "UPDATE buyers SET stripe_customer_attempts = stripe_customer_attempts + 1 WHERE id = $1", buyer_id
    )
    return None, int(row["stripe_customer_attempts"])


async def record_stripe_customer(conn: asyncpg.Connection, buyer_id: str, customer_id: str) -> str | None:
    """The buyer's Customer is this one unless one was recorded first; the one recorded (None: no such buyer)."""
    recorded: str | None = await conn.fetchval(
        """UPDATE buyers SET stripe_customer_id = COALESCE(stripe_customer_id, $2) WHERE id = $1
           RETURNING stripe_customer_id""",
        buyer_id,
        customer_id,
    )
    return recorded
