"""catalog: merchants, products, stock. The only wiring: HTTP routes, subscriptions, runtime."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Query, Request, status
from tweetshop_platform import ratelimit
from tweetshop_platform.auth import bearer_token
from tweetshop_platform.errors import NotFound
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import handlers, repository, service
from .api import ApiKeyOut, MerchantCreated, MerchantIn, MerchantOut, ProductIn, ProductOut, ProductPatch
from .config import CatalogSettings
from .domain import Product


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    """The catalog service: HTTP API plus its consumers and outbox relay."""
    settings = settings or CatalogSettings()
    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime = ServiceRuntime(settings, package="catalog")
    runtime.subscribe_declared({"orders": handlers.on_order_event})
    app = create_service_app(
        runtime,
        title="tweetshop catalog",
        description="Merchants, products and stock. Reserves stock for orders (checkout.orders.v1).",
    )

    def correlation(request: Request) -> str:
        return str(request.state.correlation_id)

    @app.post("/merchants", status_code=status.HTTP_201_CREATED, response_model=MerchantCreated, tags=["merchants"])
    async def create_merchant(body: MerchantIn, request: Request) -> MerchantCreated:
        merchant_id, api_key = await service.register_merchant(
            runtime.pool, body.handle, body.name, correlation(request)
        )
        return MerchantCreated(id=merchant_id, handle=body.handle, name=body.name, api_key=api_key)

    @app.get(
        "/merchants/me",
        response_model=MerchantOut,
        tags=["merchants"],
        summary="The merchant of the presented API key (sign in with a key)",
    )
    async def who_am_i(request: Request) -> MerchantOut:
        merchant = await service.merchant_for_key(runtime.pool, bearer_token(request))
        return MerchantOut(id=merchant["id"], handle=merchant["handle"], name=merchant["name"])

    @app.get("/merchants/{merchant_id}", response_model=MerchantOut, tags=["merchants"])
    async def get_merchant(merchant_id: uuid.UUID) -> MerchantOut:
        async with runtime.pool.acquire() as conn:
            merchant = await repository.get_merchant(conn, merchant_id)
        if merchant is None:
            raise NotFound("unknown merchant", code="unknown_merchant")
        return MerchantOut(id=merchant["id"], handle=merchant["handle"], name=merchant["name"])

    @app.get("/merchants", response_model=MerchantOut, tags=["merchants"], summary="Find a merchant by handle")
    async def find_merchant(handle: str = Query(pattern=r"^[a-z0-9_]{2,30}$")) -> MerchantOut:
        async with runtime.pool.acquire() as conn:
            merchant = await repository.get_merchant_by_handle(conn, handle)
        if merchant is None:
            raise NotFound(f"no merchant @{handle}", code="unknown_merchant")
        return MerchantOut(id=merchant["id"], handle=merchant["handle"], name=merchant["name"])

    @app.post("/merchants/{merchant_id}/api-key", response_model=ApiKeyOut, tags=["merchants"])
    async def rotate_api_key(merchant_id: uuid.UUID, request: Request) -> ApiKeyOut:
        return ApiKeyOut(api_key=await service.rotate_key(runtime.pool, merchant_id, bearer_token(request)))

    @app.post("/products", status_code=status.HTTP_201_CREATED, response_model=ProductOut, tags=["products"])
    async def create_product(body: ProductIn, request: Request) -> ProductOut:
        product = Product(
            id=uuid.uuid4(),
            merchant_id=body.merchant_id,
            title=body.title,
            description=body.description,
            image_url=body.image_url,
            price_minor=body.price_minor,
            currency=body.currency,
            stock_available=body.stock,
            stock_reserved=0,
            stock_sold=0,
            status="active",
            version=1,
        )
        created = await service.list_product(runtime.pool, bearer_token(request), product, correlation(request))
        return ProductOut.of(created)

    @app.get("/products/{product_id}", response_model=ProductOut, tags=["products"])
    async def get_product(product_id: uuid.UUID) -> ProductOut:
        return ProductOut.of(await service.get_product(runtime.pool, product_id))

    @app.get("/products", response_model=list[ProductOut], tags=["products"], summary="A merchant's products")
    async def list_products(merchant_id: uuid.UUID, limit: int = Query(default=100, ge=1, le=500)) -> list[ProductOut]:
        async with runtime.pool.acquire() as conn:
            products = await repository.list_products(conn, merchant_id, limit)
        return [ProductOut.of(p) for p in products]

    @app.patch("/products/{product_id}", response_model=ProductOut, tags=["products"])
    async def patch_product(product_id: uuid.UUID, body: ProductPatch, request: Request) -> ProductOut:
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        updated = await service.change_product(
            runtime.pool, bearer_token(request), product_id, changes, correlation(request)
        )
        return ProductOut.of(updated)

    # Registering and rotating keys: a tighter limit per client than other writes.
    ratelimit.limit_routes(
        app, {"POST /merchants": ratelimit.SIGNUPS, "POST /merchants/{merchant_id}/api-key": ratelimit.SIGNUPS}
    )
    return app
