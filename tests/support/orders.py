"""Submit orders through the same services the API uses."""

from __future__ import annotations

from easel.api.state import AppState
from easel.clock import utcnow
from easel.db.tables import Account
from easel.orders.request import build_request
from easel.orders.submit import submit


async def submit_order(
    state: AppState, account: Account, style: str = "general", **fields: object
) -> str:
    catalog = state.catalog
    model = catalog.style(style)
    assert model is not None
    req = build_request(
        state.settings,
        dialect="native",
        model=model,
        model_alias=style,
        product=catalog.products[str(fields.pop("product", "static_image"))],
        prompt=str(fields.pop("prompt", "a red fox in snow")),
        width=512,
        height=512,
        body=fields,
        **fields,  # type: ignore[arg-type]
    )
    async with state.db.transaction() as session:
        order, _ = await submit(session, catalog, account, req, utcnow())
    return order.id
