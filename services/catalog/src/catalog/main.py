"""catalog: merchants, products, stock. The only wiring: HTTP routes, subscriptions, runtime."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, status
from tweetshop_platform import ratelimit
from tweetshop_platform.errors import NotFound
from tweetshop_platform.openapi import MERCHANT_API_KEY
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import handlers, repository, service
from .api import ApiKeyOut, MerchantCreated, MerchantIn, MerchantOut, ProductIn, ProductOut, ProductPatch
from .config import CatalogSettings
from .domain import Product, new_id

# The errors only a route's use case raises (its credential's refusals are documented by the credential).
UNKNOWN_MERCHANT: dict[str, Any] = {"description": "No such merchant"}
UNKNOWN_PRODUCT: dict[str, Any] = {"description": "No such product"}


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    """The catalog service: HTTP API plus its consumers and outbox relay."""
    settings = settings or CatalogSettings()
    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime = ServiceRuntime(settings, package="catalog")
    runtime.subscribe_declared(
        {
            "orders": handlers.order_events(settings.allocation_units),
            "allocations": handlers.allocation_events(settings.allocation_units),
        }
    )
    app = create_service_app(
        runtime,
        title="tweetshop catalog",
        description="Merchants, products and stock. Reserves stock for orders (checkout.orders.v1).",
    )

    def correlation(request: Request) -> str:
        return str(request.state.correlation_id)

    @app.post(
        "/merchants",
        operation_id="registerMerchant",
        status_code=status.HTTP_201_CREATED,
        response_model=MerchantCreated,
        tags=["merchants"],
        responses={409: {"description": "The handle is taken"}},
    )
    async def create_merchant(body: MerchantIn, request: Request) -> MerchantCreated:
        merchant_id, api_key = await service.register_merchant(
            runtime.pool, body.handle, body.name, correlation(request)
        )
        return MerchantCreated(id=merchant_id, handle=body.handle, name=body.name, api_key=api_key)

    @app.get(
        "/merchants/me",
        operation_id="getCurrentMerchant",
        response_model=MerchantOut,
        tags=["merchants"],
        summary="The merchant of the presented API key (sign in with a key)",
    )
    async def who_am_i(api_key: Annotated[str, Depends(MERCHANT_API_KEY)]) -> MerchantOut:
        merchant = await service.merchant_for_key(runtime.pool, api_key)
        return MerchantOut(id=merchant["id"], handle=merchant["handle"], name=merchant["name"])

    @app.get(
        "/merchants/{merchant_id}",
        operation_id="getMerchant",
        response_model=MerchantOut,
        tags=["merchants"],
        responses={404: UNKNOWN_MERCHANT},
    )
    async def get_merchant(merchant_id: uuid.UUID) -> MerchantOut:
        async with runtime.pool.acquire() as conn:
            merchant = await repository.get_merchant(conn, merchant_id)
        if merchant is None:
            raise NotFound("unknown merchant", code="unknown_merchant")
        return MerchantOut(id=merchant["id"], handle=merchant["handle"], name=merchant["name"])

    @app.get(
        "/merchants",
        operation_id="findMerchant",
        response_model=MerchantOut,
        tags=["merchants"],
        summary="Find a merchant by handle",
        responses={404: {"description": "No merchant has this handle"}},
    )
    async def find_merchant(handle: str = Query(pattern=r"^[a-z0-9_]{2,30}$")) -> MerchantOut:
        async with runtime.pool.acquire() as conn:
            merchant = await repository.get_merchant_by_handle(conn, handle)
        if merchant is None:
            raise NotFound(f"no merchant @{handle}", code="unknown_merchant")
        return MerchantOut(id=merchant["id"], handle=merchant["handle"], name=merchant["name"])

    @app.post(
        "/merchants/{merchant_id}/api-key",
        operation_id="rotateApiKey",
        response_model=ApiKeyOut,
        tags=["merchants"],
        summary="Replace the merchant's API key (bearer: its current key); the old one stops working",
        responses={404: UNKNOWN_MERCHANT},
    )
    async def rotate_api_key(merchant_id: uuid.UUID, api_key: Annotated[str, Depends(MERCHANT_API_KEY)]) -> ApiKeyOut:
        return ApiKeyOut(api_key=await service.rotate_key(runtime.pool, merchant_id, api_key))

    @app.post(
        "/products",
        operation_id="createProduct",
        status_code=status.HTTP_201_CREATED,
        response_model=ProductOut,
        tags=["products"],
        summary="List a new product (bearer: its merchant's API key)",
        responses={404: UNKNOWN_MERCHANT},
    )
    async def create_product(
        body: ProductIn, request: Request, api_key: Annotated[str, Depends(MERCHANT_API_KEY)]
    ) -> ProductOut:
        product = Product(
            id=new_id(),
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
        created = await service.list_product(
            runtime.pool, api_key, product, correlation(request), settings.allocation_units
        )
        return ProductOut.of(created)

    @app.get(
        "/products/{product_id}",
        operation_id="getProduct",
        response_model=ProductOut,
        tags=["products"],
        responses={404: UNKNOWN_PRODUCT},
    )
    async def get_product(product_id: uuid.UUID) -> ProductOut:
        return ProductOut.of(await service.get_product(runtime.pool, product_id))

    @app.get(
        "/products",
        operation_id="listProducts",
        response_model=list[ProductOut],
        tags=["products"],
        summary="A merchant's products",
    )
    async def list_products(merchant_id: uuid.UUID, limit: int = Query(default=100, ge=1, le=500)) -> list[ProductOut]:
        async with runtime.pool.acquire() as conn:
            products = await repository.list_products(conn, merchant_id, limit)
        return [ProductOut.of(p) for p in products]

    @app.patch(
        "/products/{product_id}",
        operation_id="updateProduct",
        response_model=ProductOut,
        tags=["products"],
        summary="Change a product (bearer: its merchant's API key)",
        responses={404: UNKNOWN_PRODUCT},
    )
    async def patch_product(
        product_id: uuid.UUID,
        body: ProductPatch,
        request: Request,
        api_key: Annotated[str, Depends(MERCHANT_API_KEY)],
    ) -> ProductOut:
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        updated = await service.change_product(
            runtime.pool, api_key, product_id, changes, correlation(request), settings.allocation_units
        )
        return ProductOut.of(updated)

    # Registering and rotating keys: a tighter limit per client than other writes.
    ratelimit.limit_routes(
        app, {"POST /merchants": ratelimit.SIGNUPS, "POST /merchants/{merchant_id}/api-key": ratelimit.SIGNUPS}
    )
    return app
