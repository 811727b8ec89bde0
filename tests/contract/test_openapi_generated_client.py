"""A client team generates a typed Python client from each ``/openapi.json``, and it works.

``openapi-python-client`` (a real generator, pinned in constraints.txt) writes one package per document into a
temporary directory, once per session per document, without a single warning (a warning means part of the API
was left out of the client). Each generated package is imported and used, with its own models and its bearer
``AuthenticatedClient``, against the app: in-process (httpx's ASGI transport, which the generated client accepts
as ``httpx_args``) for all five, and against a real catalog process with its database for a merchant's sign-up,
sign-in and first product.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from .conftest import APPS, OPERATOR_KEY

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# No post-generation hooks: the generator would run ruff over the package (slower, and nothing to check here).
GENERATOR_CONFIG = "post_hooks: []\n"

Generated = Callable[[str], ModuleType]


@pytest.fixture(scope="session")
def generated_client(apps: dict[str, FastAPI], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """``generated_client("catalog")``: the package generated from catalog's document (made on first use)."""
    root = tmp_path_factory.mktemp("openapi-clients")
    config = root / "generator.yaml"
    config.write_text(GENERATOR_CONFIG, encoding="utf-8")
    made: dict[str, ModuleType] = {}

    def generate(name: str) -> ModuleType:
        if name not in made:
            document = root / f"{name}.json"
            document.write_text(json.dumps(apps[name].openapi()), encoding="utf-8")
            package = f"{name}_generated_client"
            command = [GENERATOR, "generate", "--path", document, "--config", config, "--meta", "none"]
            run = subprocess.run(
                [*command, "--output-path", root / package],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            output = run.stdout + run.stderr
            assert run.returncode == 0, f"{name}: the generator failed\n{output}"
            assert "warning" not in output.lower(), f"{name}: the generator left part of the API out\n{output}"
            made[name] = importlib.import_module(package)
        return made[name]

    sys.path.insert(0, str(root))
    try:
        yield generate
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m.split(".")[0].endswith("_generated_client")]:
            del sys.modules[module]


def submodule(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def in_process(package: ModuleType, app: FastAPI, token: str | None = None) -> Any:
    """The generated ``Client`` (``AuthenticatedClient`` with a token) talking to ``app`` in-process."""
    client = submodule(package, "client")
    args = {"base_url": "http://contract", "httpx_args": {"transport": httpx.ASGITransport(app=app)}}
    return client.AuthenticatedClient(token=token, **args) if token else client.Client(**args)


@pytest.mark.parametrize("name", [a for a in APPS if a != "webapp"])
async def test_the_generated_client_calls_each_service_with_its_bearer_and_reads_typed_errors(
    name: str, apps: dict[str, FastAPI], generated_client: Generated
) -> None:
    package = generated_client(name)
    operators = submodule(package, "api.operators.confirm_operator_key")
    models = submodule(package, "models")

    # The operator key as the generated AuthenticatedClient sends it (Authorization: Bearer).
    confirmed = await operators.asyncio_detailed(client=in_process(package, apps[name], OPERATOR_KEY))
    assert confirmed.status_code == 204, confirmed.content

    # Without it: 401, parsed into the generated Error model (the one error body every service answers).
    refused = await operators.asyncio_detailed(client=in_process(package, apps[name]))
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Error)
    assert refused.parsed.error == "unauthorized"

    wrong = await operators.asyncio(client=in_process(package, apps[name], "not-the-operator-key"))
    assert isinstance(wrong, models.Error) and wrong.error == "forbidden"


async def test_the_web_app_client_reads_the_page_config(apps: dict[str, FastAPI], generated_client: Generated) -> None:
    package = generated_client("webapp")
    config = submodule(package, "api.pages.get_client_config")
    answer = await config.asyncio_detailed(client=in_process(package, apps["webapp"]))
    assert answer.status_code == 200
    assert answer.parsed.to_dict()["stripe"]["js_url"]
    # The gateway's operations each have their own function (one operation id per method).
    for method in ("get", "post", "patch", "put", "delete"):
        assert hasattr(submodule(package, f"api.gateway.gateway_{method}"), "asyncio_detailed")


def test_a_merchant_signs_up_signs_in_and_lists_a_product_through_the_generated_catalog_client(
    generated_client: Generated, service_process: Any
) -> None:
    """Against a real catalog process and its database: the models, the bearer, the typed answers."""
    package = generated_client("catalog")
    models = submodule(package, "models")
    client = submodule(package, "client")
    merchants = "api.merchants"
    (catalog,) = service_process.start_many(("catalog",))

    with client.Client(base_url=catalog.base_url, raise_on_unexpected_status=True) as anonymous:
        handle = f"gen{uuid.uuid4().hex[:8]}"
        created = submodule(package, f"{merchants}.register_merchant").sync(
            client=anonymous, body=models.MerchantIn(handle=handle, name="Generated shop")
        )
        assert isinstance(created, models.MerchantCreated), created
        assert created.handle == handle
        taken = submodule(package, f"{merchants}.register_merchant").sync_detailed(
            client=anonymous, body=models.MerchantIn(handle=handle, name="Twice")
        )
        assert taken.status_code == 409 and taken.parsed.error == "handle_taken"

    with client.AuthenticatedClient(base_url=catalog.base_url, token=created.api_key) as merchant:
        me = submodule(package, f"{merchants}.get_current_merchant").sync(client=merchant)
        assert isinstance(me, models.MerchantOut) and me.id == created.id
        product = submodule(package, "api.products.create_product").sync(
            client=merchant,
            body=models.ProductIn(
                merchant_id=created.id, title="Generated mug", price_minor=1500, currency="EUR", stock=3
            ),
        )
        assert isinstance(product, models.ProductOut), product
        assert (product.merchant_id, product.stock_available, product.version) == (created.id, 3, 1)
