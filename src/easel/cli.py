"""The `easel` command: serve, worker, services, migrate, accounts, keys, plans; and the user
commands of easel.client.commands (generate, orders, account, webhooks, resume)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from easel.client.commands import USER_COMMANDS
from easel.config import Settings, get_settings
from easel.errors import EaselError
from easel.logging import setup_logging

if TYPE_CHECKING:  # the user commands start without the server's packages
    from easel.api.state import AppState
    from easel.catalog import Catalog

T = TypeVar("T")

log = logging.getLogger(__name__)


def run_with_state(fn: Callable[[AppState], Awaitable[T]]) -> T:
    """Run `fn` against a migrated database; print an EaselError as a clean CLI error."""

    async def main() -> T:
        from easel.api.state import AppState
        from easel.db.migrate import migrate

        state = AppState.build(get_settings())
        try:
            await migrate(state.db)
            return await fn(state)
        finally:
            await state.db.dispose()

    try:
        return asyncio.run(main())
    except EaselError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def main() -> None:
    """Easel: self-hosted image and animation generation API."""
    setup_logging(os.environ.get("EASEL_LOG_LEVEL", "INFO"))


for _command in USER_COMMANDS:  # generate, orders, account, webhooks, resume: over HTTP only
    main.add_command(_command)


@main.command()
def migrate() -> None:
    """Apply database migrations."""

    async def _noop(state: AppState) -> None:
        click.echo(f"database at {state.db.url.render_as_string()} is up to date")

    run_with_state(_noop)


async def _bootstrap_admin(state: AppState) -> str | None:
    """On an empty database, an admin account and its key (returned once)."""
    from easel.accounts.accounts import count_accounts, create_account
    from easel.accounts.keys import create_key

    async with state.db.transaction() as session:
        if await count_accounts(session):
            return None
        s = state.settings
        account = await create_account(
            session, state.catalog, s.admin_email, s.admin_plan, is_admin=True
        )
        _, plain = await create_key(session, account.id, "admin")
        return f"{account.email} ({account.plan}) key: {plain}"


@main.command()
@click.option("--host", default=None, help="Bind address (EASEL_HOST, default 0.0.0.0).")
@click.option("--port", default=None, type=int, help="Port (EASEL_PORT, default 7000).")
@click.option("--no-worker", is_flag=True, help="No worker child (workers run elsewhere).")
@click.option(
    "--no-services",
    is_flag=True,
    help="No services child (reaper, sweeper, webhooks run in `easel services` elsewhere).",
)
def serve(host: str | None, port: int | None, no_worker: bool, no_services: bool) -> None:
    """Run the API server, with `easel services` and one `easel worker` as child processes."""
    if host:
        os.environ["EASEL_HOST"] = host
    if port:
        os.environ["EASEL_PORT"] = str(port)
    get_settings.cache_clear()
    settings = get_settings()
    share_metrics(settings, children=not (no_worker and no_services))
    admin = run_with_state(_bootstrap_admin)
    if admin:
        click.echo(f"Created the first account. Save this key, it is shown only once:\n  {admin}")
        click.echo(
            "Sign in to the web console at /console/ once it has a password: "
            f"easel accounts set-password --email {settings.admin_email}"
        )
    if not no_worker:
        click.echo(models_note())
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turn that into a clean exit
    # that still runs the `finally` below, which lets the worker finish its order.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    from easel.services.children import ChildSupervisor

    children = [
        ChildSupervisor(
            command,
            stop_timeout=settings.worker_stop_timeout,
            restart_first=settings.child_restart_first,
            restart_max=settings.child_restart_max,
        )
        for command, wanted in (("services", not no_services), ("worker", not no_worker))
        if wanted
    ]
    for child in children:
        child.start()
    try:
        from easel.api.app import create_app, server

        api = server(create_app(settings), settings.host, settings.port, settings.log_level.lower())
        api.run()
        if not api.started:
            sys.exit(3)  # uvicorn's STARTUP_FAILURE
    finally:
        for child in reversed(children):
            child.stop()


def _exit_cleanly(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def share_metrics(settings: Settings, children: bool) -> Path | None:
    """`easel serve`'s metrics directory: EASEL_METRICS_DIR, else <data dir>/metrics when it
    starts children; cleared of earlier processes' files and handed to the children, so /metrics
    adds them all up. None: one process, metrics in memory. Runs before prometheus_client is
    imported (it chooses its mode then)."""
    if settings.metrics_dir:
        path = Path(settings.metrics_dir)
    elif children:
        path = settings.data_dir / "metrics"
    else:
        return None
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # files of processes of an earlier run
        stale.unlink(missing_ok=True)
    os.environ["EASEL_METRICS_DIR"] = str(path)
    os.environ.pop("EASEL_METRICS_PORT", None)  # children are scraped through the API
    from easel import metrics

    metrics.require_shared(path)
    return path


@contextmanager
def serving_metrics(settings: Settings, port: int | None) -> Iterator[None]:
    """`--metrics-port` (EASEL_METRICS_PORT): this process's metrics over HTTP while it runs."""
    port = settings.metrics_port if port is None else port
    if not port:
        yield
        return
    from easel.metrics import MetricsServer

    server = MetricsServer(settings.host, port, settings.metrics_token).start()
    log.info(
        "metrics served",
        extra={"action": "metrics_port", "host": settings.host, "port": server.port},
    )
    try:
        yield
    finally:
        server.close()


METRICS_PORT_HELP = (
    "Serve this process's Prometheus metrics on this port (EASEL_METRICS_PORT; default: off). "
    "Not needed under `easel serve`, whose /metrics includes its children."
)


@main.command()
@click.option(
    "--models",
    default="",
    help="Comma-separated catalog models (ids, styles or aliases) this worker claims; "
    "default: all.",
)
@click.option("--preload", is_flag=True, help="Load the --models before claiming any order.")
@click.option(
    "--remote",
    "kind",
    flag_value="remote",
    default=None,
    help="Claim only models served through upstream providers (no GPU, no torch; many orders "
    "in flight).",
)
@click.option(
    "--local", "kind", flag_value="local", help="Claim only models run on this host's device."
)
@click.option("--metrics-port", type=int, default=None, help=METRICS_PORT_HELP)
def worker(models: str, preload: bool, kind: str | None, metrics_port: int | None) -> None:
    """Claim and run orders until SIGTERM (the running batch is finished first)."""
    from easel.services.host import run_services
    from easel.wakeup import child_link
    from easel.worker.runner import Worker

    if preload and not models.strip():
        raise click.UsageError("--preload needs --models (the models to load)")

    async def _run(state: AppState) -> None:
        served = resolve_models(state.catalog, models) if models.strip() else None
        if kind is not None:
            remote = kind == "remote"
            pool = served if served is not None else list(state.catalog.models)
            served = [m for m in pool if state.catalog.models[m].is_upstream == remote]
        worker = Worker(
            state.settings,
            state.catalog,
            state.db,
            state.storage,
            models=served,
            preload=preload,
            link=child_link(),
        )
        await run_services(worker.services(), stop_on_signals())

    with serving_metrics(get_settings(), metrics_port):
        run_with_state(_run)


@main.command()
@click.option("--metrics-port", type=int, default=None, help=METRICS_PORT_HELP)
def services(metrics_port: int | None) -> None:
    """Run the reaper, the retention sweeper and the webhook sender until SIGTERM (no GPU)."""
    from easel.services.host import run_services
    from easel.services.hosted import background_services

    async def _run(state: AppState) -> None:
        hosted = background_services(state.settings, state.db, state.storage)
        await run_services(hosted, stop_on_signals())

    with serving_metrics(get_settings(), metrics_port):
        run_with_state(_run)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def resolve_models(catalog: Catalog, names: str) -> list[str]:
    """Catalog ids for `--models` (ids, styles or aliases); a ClickException names the bad one."""
    from easel.backends.registry import served_families

    ids: list[str] = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        model = catalog.resolve(name)
        if model is None:
            known = ", ".join(sorted(catalog.models))
            raise click.BadParameter(
                f"no catalog model {name!r}; models: {known}", param_hint="--models"
            )
        if model.family not in served_families():
            raise click.BadParameter(
                f"{name!r} is a {model.family} model, which this worker has no backend for",
                param_hint="--models",
            )
        if model.id not in ids:
            ids.append(model.id)
    return ids


@main.group()
def accounts() -> None:
    """Create accounts and give them credits."""


@accounts.command("create")
@click.option("--email", required=True)
@click.option("--plan", default="standard", show_default=True)
def accounts_create(email: str, plan: str) -> None:
    from easel.accounts.accounts import create_account

    async def _create(state: AppState) -> Any:
        async with state.db.transaction() as session:
            return await create_account(session, state.catalog, email, plan)

    account = run_with_state(_create)
    click.echo(f"{account.id} {account.email} plan={account.plan}")


@accounts.command("grant")
@click.option("--account", "ref", required=True, help="Account email or id.")
@click.option("--credits", "amount", required=True, type=int, help="Top-up credits (never expire).")
@click.option("--note", default="top-up by operator")
def accounts_grant(ref: str, amount: int, note: str) -> None:
    from easel.accounts import ledger
    from easel.accounts.accounts import find_account
    from easel.clock import utcnow

    async def _grant(state: AppState) -> ledger.Balance:
        async with state.db.transaction() as session:
            account = await find_account(session, ref)
            await ledger.top_up(session, account.id, amount, utcnow(), note)
            plan = state.catalog.plans[account.plan]
            return await ledger.balance_with_grant(session, account.id, plan, utcnow())

    bal = run_with_state(_grant)
    click.echo(f"granted {amount}; balance {bal.total} (plan {bal.plan}, top-up {bal.topup})")


@accounts.command("plan")
@click.option("--account", "ref", required=True, help="Account email or id.")
@click.option("--plan", required=True)
def accounts_plan(ref: str, plan: str) -> None:
    """Move an account to another plan."""
    from easel.accounts.accounts import find_account, set_plan

    async def _set(state: AppState) -> None:
        async with state.db.transaction() as session:
            await set_plan(session, state.catalog, await find_account(session, ref), plan)

    run_with_state(_set)
    click.echo(f"{ref} is now on plan {plan}")


@accounts.command("set-password")
@click.option(
    "--email", required=True, help="The account's email (the admin's: EASEL_ADMIN_EMAIL)."
)
@click.password_option(help="The new password (asked for when not given).")
def accounts_set_password(email: str, password: str) -> None:
    """Set the web console password of an account's email, creating its sign-in if needed."""
    from easel.accounts import passwords, users
    from easel.accounts.accounts import find_account
    from easel.clock import utcnow

    async def _set(state: AppState) -> str:
        hashed = await passwords.hash_password(passwords.check_new_password(password))
        async with state.db.transaction() as session:
            user = await users.user_by_email(session, email)
            if user is not None:
                await users.set_password_hash(session, user, hashed, utcnow())
                return "password changed; every browser signed in as it is signed out"
            account = await find_account(session, email)
            await users.create_user(session, account.id, account.email, hashed, utcnow())
            return f"{account.email} can now sign in at /console/"

    click.echo(run_with_state(_set))


@accounts.command("reset-link")
@click.option("--email", required=True)
def accounts_reset_link(email: str) -> None:
    """Print a password-reset link for a console sign-in (when no SMTP server is set)."""
    from easel.accounts import users
    from easel.console.links import reset_link
    from easel.errors import NotFound

    async def _link(state: AppState) -> str:
        async with state.db.transaction(readonly=True) as session:
            user = await users.user_by_email(session, email)
        if user is None:
            raise NotFound(f"no console sign-in with email {email}")
        return reset_link(state.settings, user)

    click.echo(run_with_state(_link))


@accounts.command("invite")
@click.option("--email", required=True)
def accounts_invite(email: str) -> None:
    """Print a sign-up link for one email (EASEL_SIGNUP=invite)."""
    from easel.console.links import invite_link

    click.echo(invite_link(get_settings(), email))


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--account", "ref", required=True, help="Account email or id.")
@click.option("--name", default="")
def keys_create(ref: str, name: str) -> None:
    from easel.accounts.accounts import find_account
    from easel.accounts.keys import create_key

    async def _create(state: AppState) -> str:
        async with state.db.transaction() as session:
            account = await find_account(session, ref)
            _, plain = await create_key(session, account.id, name)
            return plain

    click.echo(run_with_state(_create))


@keys.command("list")
@click.option("--account", "ref", required=True, help="Account email or id.")
def keys_list(ref: str) -> None:
    from easel.accounts.accounts import find_account
    from easel.accounts.keys import list_keys

    async def _list(state: AppState) -> list[Any]:
        async with state.db.transaction() as session:
            return await list_keys(session, (await find_account(session, ref)).id)

    for key in run_with_state(_list):
        state = "revoked" if key.revoked_at else "active"
        used = key.last_used_at.isoformat() if key.last_used_at else "never"
        click.echo(f"{key.id} {key.prefix}… {state} last_used={used} {key.name}")


@keys.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke KEY (its id, display prefix, or the key itself)."""
    from easel.accounts.keys import revoke_key

    async def _revoke(state: AppState) -> str:
        async with state.db.transaction() as session:
            return (await revoke_key(session, key)).id

    click.echo(f"revoked {run_with_state(_revoke)}")


@main.command()
def plans() -> None:
    """List the catalog's plans."""
    from easel.catalog import load_catalog

    catalog = load_catalog(Settings().catalog)
    click.echo(f"{'plan':<10}{'credits':>8}{'priority':>9}{'images':>7}  animation  api  models")
    for p in catalog.plans.values():
        click.echo(
            f"{p.id:<10}{p.credits:>8}{p.priority:>9}{p.max_images:>7}  "
            f"{'yes' if p.animation else 'no':<9}  {'yes' if p.api_access else 'no':<3}  "
            f"{','.join(p.models)}"
        )


from easel.models_cli import models  # noqa: E402 - `easel models`, kept in its own module
from easel.models_cli import startup_note as models_note  # noqa: E402

main.add_command(models)
