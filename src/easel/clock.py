from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def period_of(moment: datetime) -> str:
    """The calendar month (UTC) a ledger row belongs to, as YYYY-MM."""
    return f"{moment.astimezone(UTC):%Y-%m}"


def next_period_start(moment: datetime) -> datetime:
    m = moment.astimezone(UTC)
    year, month = (m.year + 1, 1) if m.month == 12 else (m.year, m.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as every API body writes times."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None
