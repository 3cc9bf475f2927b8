"""The user commands of `easel` (docs/cli.md): generate, orders ls|show|watch|cancel|download,
account, webhooks verify, resume. They reach the server over HTTP only, through the SDK, so they
work from any machine with EASEL_BASE_URL and EASEL_API_KEY; `easel.cli` adds them beside the
operator commands.

Exit codes: 0 done; 1 an order failed or was canceled, or a webhook did not verify; 2 usage;
3 the server refused or could not be reached; 4 the wait ran out (the order goes on: `easel
resume` or `easel orders watch` picks it up); 130 interrupted (likewise).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from easel.client.async_client import AsyncEasel
from easel.client.async_order import AsyncOrder
from easel.client.bodies import image_value, new_idempotency_key
from easel.client.display import Display, JsonLines, OrderIds, RichDisplay
from easel.client.errors import APIConnectionError, APIError, OrderFailed, WaitTimeout
from easel.client.journal import DETACHED, SUBMITTED, Entry, Journal, key_hash
from easel.client.models import COMPLETED
from easel.webhooks.signing import WebhookVerificationError, verify

T = TypeVar("T")

FAILED_EXIT, REFUSED_EXIT, TIMEOUT_EXIT, INTERRUPTED_EXIT = 1, 3, 4, 130
IMAGES_PER_ORDER = {"static_image": 1, "batch_4": 4, "batch_8": 8}
RESUME_HINT = "the order goes on: `easel resume` re-attaches and finishes the downloads"
SENT_HINT = "the submission is in the journal: `easel resume` sends it again (charged once)"


def connection(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--base-url and --api-key (EASEL_BASE_URL, EASEL_API_KEY) on a command."""
    fn = click.option("--api-key", envvar="EASEL_API_KEY", help="API key (EASEL_API_KEY).")(fn)
    return click.option(
        "--base-url",
        envvar="EASEL_BASE_URL",
        help="The server (EASEL_BASE_URL; default http://localhost:7000).",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts.")(fn)


def timeout_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout",
        type=float,
        default=900.0,
        show_default=True,
        help="Seconds to wait for the order to end (it goes on after).",
    )(fn)


def client_for(base_url: str | None, api_key: str | None) -> AsyncEasel:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    retries = int(os.environ.get("EASEL_MAX_RETRIES", "2"))
    return AsyncEasel(base_url, api_key, max_retries=retries)


def display_for(as_json: bool) -> Display:
    return JsonLines() if as_json else RichDisplay()


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; SDK errors become messages and exit codes."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        click.echo(f"interrupted; {RESUME_HINT}", err=True)
        sys.exit(INTERRUPTED_EXIT)
    except WaitTimeout as exc:
        click.echo(f"{exc.message}; {RESUME_HINT}", err=True)
        sys.exit(TIMEOUT_EXIT)
    except APIConnectionError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(REFUSED_EXIT)
    except APIError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(REFUSED_EXIT)
    except OrderFailed as exc:
        click.echo(exc.message, err=True)
        sys.exit(FAILED_EXIT)


async def follow(order: AsyncOrder, out: Path | None, display: Display, timeout: float) -> bool:
    """Show the order's events until it ends, then write its files to `out` (when given).
    True when it completed."""
    async for event in order.events(timeout):
        display.event(order.id, event)
    if order.status != COMPLETED:
        return False
    if out is not None:
        async for file in order.downloads(out, timeout=timeout):
            display.file(order.id, file)
    return True


async def place(
    client: AsyncEasel, journal: Journal, entry: Entry, display: Display, state: str = SUBMITTED
) -> AsyncOrder:
    """Send the entry's order (again: with the same Idempotency-Key the server answers with the
    order it already made, if it made one) and note its id; a refusal removes the entry."""
    try:
        order = await client.generate(**entry.params, idempotency_key=entry.key)
    except APIError:
        journal.remove(entry)  # refused: nothing was made or charged
        raise
    entry.order_id, entry.state = order.id, state
    journal.save(entry)
    display.submitted(order.id, entry.key, order.replayed)
    return order


async def finish(
    client: AsyncEasel, journal: Journal, entry: Entry, display: Display, timeout: float
) -> bool:
    """Follow the entry's order to its end (placing it first if its id is unknown) and write its
    files; the entry is removed once nothing is left to do."""
    if entry.order_id is None:
        order = await place(client, journal, entry, display)
    else:
        order = client.order(entry.order_id)
    completed = await follow(order, Path(entry.out_dir), display, timeout)
    journal.remove(entry)
    return completed


async def all_of(work: list[Awaitable[bool]]) -> bool:
    """Run `work` side by side to the end; then raise the first error, if any."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return all(results)


def orders_for(params: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """`--n` images as orders of `product_type`: n / its images, with consecutive seeds."""
    product = params["product_type"]
    per_order = IMAGES_PER_ORDER.get(product, 1)
    if n % per_order:
        raise click.BadParameter(f"{product} makes {per_order} images per order", param_hint="--n")
    seed = params.get("seed")
    return [
        params | ({"seed": seed + k * per_order} if seed is not None else {})
        for k in range(n // per_order)
    ]


@click.command()
@click.argument("prompt")
@click.option("--style", default="general", show_default=True, help="Style (see `easel plans`).")
@click.option(
    "--product",
    "product_type",
    default="static_image",
    show_default=True,
    help="static_image, batch_4, batch_8, animation_16f / 24f / 32f.",
)
@click.option(
    "--n",
    type=click.IntRange(1, 64),
    default=None,
    help="Images in all: n / (the product's images) orders with consecutive seeds.",
)
@click.option("--seed", type=int, help="Seed of the first image (then seed+1, ...).")
@click.option("--width", type=int)
@click.option("--height", type=int)
@click.option("--steps", type=int)
@click.option("--guidance", "guidance_scale", type=float)
@click.option("--negative", "negative_prompt", help="Negative prompt.")
@click.option("--format", "output_format", help="png, jpeg, webp; mp4, gif for animations.")
@click.option("--image", help="Reference image (a file or a URL) for image-to-image.")
@click.option("--strength", type=float, help="Image-to-image strength (0, 1].")
@click.option("--webhook-url", help="POSTed when the order ends.")
@click.option(
    "-o", "--out", default=".", show_default=True, type=click.Path(file_okay=False), help="Folder."
)
@click.option("--no-wait", is_flag=True, help="Print the order id and exit.")
@json_option
@timeout_option
@connection
def generate(
    prompt: str,
    n: int | None,
    out: str,
    no_wait: bool,
    as_json: bool,
    timeout: float,
    base_url: str | None,
    api_key: str | None,
    image: str | None,
    **fields: Any,
) -> None:
    """Generate PROMPT: submit, show progress, write the files to --out."""
    params: dict[str, Any] = {"prompt": prompt} | {k: v for k, v in fields.items() if v is not None}
    if image is not None:
        params["image"] = image if re.match(r"https?://", image) else image_file(image)
    planned = orders_for(params, n or IMAGES_PER_ORDER.get(params["product_type"], 1))
    journal = Journal()
    folder = str(Path(out).resolve())

    async def main() -> bool:
        async with client_for(base_url, api_key) as client:
            state = DETACHED if no_wait else SUBMITTED
            shown = JsonLines() if as_json else OrderIds() if no_wait else RichDisplay()
            with shown as display:
                placed = []
                for body in planned:  # each on disk before its request is sent
                    entry = journal.add(
                        new_idempotency_key(), client.base_url, body, folder, client.api_key
                    )
                    try:
                        placed.append((entry, await place(client, journal, entry, display, state)))
                    except APIError:
                        if placed:
                            display.note(
                                f"{len(placed)} order(s) placed before this go on; {RESUME_HINT}"
                            )
                        raise
                    except APIConnectionError as exc:
                        exc.message += f"; {SENT_HINT}"
                        raise
                if no_wait:
                    return True
                return await all_of(
                    [finish(client, journal, entry, display, timeout) for entry, _ in placed]
                )

    if not run(main()):
        sys.exit(FAILED_EXIT)


def image_file(path: str) -> str:
    """A local reference image as a data URL (the SDK's encoding of a Path)."""
    try:
        return image_value(Path(path))
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="--image") from exc


@click.command()
@click.argument("refs", nargs=-1)
@json_option
@timeout_option
@connection
def resume(
    refs: tuple[str, ...],
    as_json: bool,
    timeout: float,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Finish what `easel generate` started: every unfinished submission in the journal (or
    those named by order id or key), each re-attached without a second charge."""
    journal = Journal()
    entries = journal.to_resume(refs)
    if not entries:
        click.echo(f"nothing to resume (journal: {journal.directory})", err=True)
        return
    # Each order lives on the server it was sent to, unless --base-url says otherwise.
    given = click.get_current_context().get_parameter_source("base_url")
    override = base_url if given == click.core.ParameterSource.COMMANDLINE else None
    key = api_key or os.environ.get("EASEL_API_KEY") or None
    others = [e for e in entries if e.key_hash and e.key_hash != key_hash(key)]
    for entry in others:
        click.echo(
            f"skipped {entry.order_id or entry.key}: it was sent with another API key "
            "(resuming it with this one would place a new order on this account)",
            err=True,
        )
    entries = [e for e in entries if e not in others]

    async def main() -> bool:
        results: list[bool] = []
        with display_for(as_json) as display:
            for url in dict.fromkeys(e.base_url for e in entries):
                async with client_for(override or url, api_key) as client:
                    mine = [e for e in entries if e.base_url == url]
                    results.append(
                        await all_of([finish(client, journal, e, display, timeout) for e in mine])
                    )
        return all(results)

    if not run(main()) or others:
        sys.exit(FAILED_EXIT)


@click.group()
def orders() -> None:
    """This account's orders: ls, show, watch, cancel, download."""


@orders.command("ls")
@click.option("--status", help="pending, running, completed, failed, canceled.")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@json_option
@connection
def orders_ls(
    status: str | None, limit: int, as_json: bool, base_url: str | None, api_key: str | None
) -> None:
    """The newest orders first."""

    async def main() -> list[Any]:
        async with client_for(base_url, api_key) as client:
            found = []
            async for order in client.orders.list(status=status, limit=min(limit, 100)):
                found.append(order)
                if len(found) >= limit:
                    break
            return found

    found = run(main())
    if as_json:
        for order in found:
            click.echo(order.model_dump_json(exclude_unset=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    table.add_column("order", no_wrap=True)
    for name in ("status", "style", "images", "cost"):
        table.add_column(name)
    table.add_column("created (UTC)", no_wrap=True)
    for order in found:
        created = (order.created_at or "")[:16].replace("T", " ")
        row = (order.status, order.style, str(order.n), str(order.cost), created)
        table.add_row(order.order_id, *row)
    Console(highlight=False).print(table)


@orders.command("show")
@click.argument("order_id")
@json_option
@connection
def orders_show(order_id: str, as_json: bool, base_url: str | None, api_key: str | None) -> None:
    """The order now: status, progress, outputs, error."""

    async def main() -> Any:
        async with client_for(base_url, api_key) as client:
            return (await client.orders.get(order_id)).data

    order = run(main())
    body = order.model_dump(exclude_unset=True, mode="json")
    if as_json:
        click.echo(json.dumps(body))
        return
    for key, value in body.items():
        if key in ("ok", "outputs"):
            continue
        click.echo(f"{key:<18} {json.dumps(value) if isinstance(value, dict | list) else value}")
    for output in order.outputs or []:
        click.echo(
            f"output             seed {output.seed} {output.width}x{output.height} {output.url}"
        )


@orders.command("watch")
@click.argument("order_id")
@json_option
@timeout_option
@connection
def orders_watch(
    order_id: str, as_json: bool, timeout: float, base_url: str | None, api_key: str | None
) -> None:
    """Follow the order until it ends (events, or status reads when the stream drops)."""

    async def main() -> bool:
        async with client_for(base_url, api_key) as client:
            with display_for(as_json) as display:
                return await follow(client.order(order_id), None, display, timeout)

    if not run(main()):
        sys.exit(FAILED_EXIT)


@orders.command("cancel")
@click.argument("order_id")
@json_option
@connection
def orders_cancel(order_id: str, as_json: bool, base_url: str | None, api_key: str | None) -> None:
    """Pending: canceled and refunded at once; running: stopped at its next step."""

    async def main() -> Any:
        async with client_for(base_url, api_key) as client:
            return await client.orders.cancel(order_id)

    canceled = run(main())
    if as_json:
        click.echo(canceled.model_dump_json())
    elif canceled.cancel_requested:
        click.echo(f"{order_id}: cancel requested; it stops at its next step and is refunded")
    else:
        click.echo(f"{order_id} {canceled.status}; refunded {canceled.refunded}")


@orders.command("download")
@click.argument("order_id")
@click.option("-o", "--out", default=".", show_default=True, type=click.Path(file_okay=False))
@json_option
@timeout_option
@connection
def orders_download(
    order_id: str,
    out: str,
    as_json: bool,
    timeout: float,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Write the order's files to --out (waiting for it to end first)."""

    async def main() -> bool:
        async with client_for(base_url, api_key) as client:
            order = client.order(order_id)
            with display_for(as_json) as display:
                if not (await order.refresh()).final:
                    return await follow(order, Path(out), display, timeout)
                async for file in order.downloads(out):
                    display.file(order_id, file)
            return True

    if not run(main()):
        sys.exit(FAILED_EXIT)


@click.command()
@json_option
@connection
def account(as_json: bool, base_url: str | None, api_key: str | None) -> None:
    """Plan, priority and credits left."""

    async def main() -> Any:
        async with client_for(base_url, api_key) as client:
            return await client.account()

    info = run(main())
    if as_json:
        click.echo(info.model_dump_json())
        return
    credits = info.credits
    click.echo(f"{info.email} ({info.account_id})")
    click.echo(f"plan        {info.plan} (priority {info.priority})")
    click.echo(f"credits     {credits.total} (plan {credits.plan}, top-up {credits.topup})")
    click.echo(f"resets at   {info.resets_at}")
    click.echo(f"per order   up to {info.max_images_per_order} images")
    click.echo(f"animation   {'yes' if info.animation else 'no'}")


@click.group()
def webhooks() -> None:
    """Check webhook deliveries."""


@webhooks.command("verify")
@click.option(
    "--secret", envvar="EASEL_WEBHOOK_SECRET", required=True, help="whsec_... (`easel account`)."
)
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    help="'webhook-id: ...', 'webhook-timestamp: ...', 'webhook-signature: ...'.",
)
def webhooks_verify(secret: str, headers: tuple[str, ...]) -> None:
    """Check a delivery's body (on stdin) against its headers; print the payload."""
    parsed = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(f"{header!r} is not 'name: value'", param_hint="--header")
        parsed[name.strip()] = value.strip()
    try:
        payload = verify(secret, sys.stdin.buffer.read(), parsed)
    except WebhookVerificationError as exc:
        click.echo(f"not verified: {exc}", err=True)
        sys.exit(FAILED_EXIT)
    click.echo(json.dumps(payload))


USER_COMMANDS = (generate, orders, account, webhooks, resume)
