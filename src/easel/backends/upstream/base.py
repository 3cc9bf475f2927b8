"""The interface every provider implements, and what it hands back.

A provider turns one order (`Request`) into a remote job: `submit` returns the job's `Remote`
handle (kept with the attempt row, so another worker can resume polling after a crash) or
raises `NotAccepted`; `poll` reads its `Status`; `cancel` asks the provider to stop it.

Errors::

    UpstreamError
     +-- NotAccepted   the provider did not take the work (connection refused, DNS, 429, 5xx,
     |                 credentials refused): another channel may be tried
     +-- RemoteFailed  the provider took the work and it failed; `billed` False when the
                       provider says it was not charged (then another channel may be tried)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

from easel.catalog import Channel

State = Literal["queued", "running", "succeeded", "failed"]


class UpstreamError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAccepted(UpstreamError):
    """The provider did not accept the job: nothing was billed, another try may go elsewhere.

    `retry_after`: seconds the provider asked to wait; `same_channel`: a 429 or 5xx, worth
    another try on this channel after the wait; `channel_fault`: counts toward its cooling."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        same_channel: bool = False,
        channel_fault: bool = True,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.same_channel = same_channel
        self.channel_fault = channel_fault


class RemoteFailed(UpstreamError):
    """The accepted job failed; `billed` False only where the provider documents it was not."""

    def __init__(self, message: str, *, billed: bool = True) -> None:
        super().__init__(message)
        self.billed = billed


@dataclass(frozen=True)
class Request:
    """One order as a provider sees it (its images share the prompt; seeds count up)."""

    order_id: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    n: int
    seed: int
    steps: int
    guidance: float
    output_format: str
    frames: int = 0  # > 0: a clip
    reference: bytes | None = None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def aspect_ratio(self) -> str:
        """The nearest of the common ratios, as `W:H`."""
        ratios = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")

        def off(r: str) -> float:
            w, h = (int(x) for x in r.split(":"))
            return abs(w / h - self.width / self.height)

        return min(ratios, key=off)


@dataclass(frozen=True)
class RemoteOutput:
    """One output as the provider gives it: a URL to download, or the bytes themselves."""

    url: str | None = None
    data: bytes | None = None


@dataclass
class Remote:
    """A job the provider accepted. `handle`: what polling and canceling need (URLs), stored
    with the attempt. `done`: the final status when the submit call already carried it."""

    remote_id: str
    handle: dict[str, Any] = field(default_factory=dict)
    done: Status | None = None


@dataclass
class Status:
    state: State
    queue_position: int | None = None
    progress: int | None = None  # 0-100 where the provider says
    outputs: list[RemoteOutput] = field(default_factory=list)
    error: str = ""
    billed: bool = True  # for a failed job: False where the provider says it was not charged
    cost: float | None = None  # what the provider says it charged, where it does
    remote_status: str = ""  # the provider's own word, for the operator


class ProviderHTTP(Protocol):
    """Outbound HTTP for a provider (upstream/http.py): the channel's base URL is trusted
    (operator configuration); any other URL passes the outbound URL policy."""

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response: ...


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after", "").strip()
        try:
            return max(0.0, float(value)) if value else None
        except ValueError:
            return None


class Provider(ABC):
    """One provider's protocol for one channel."""

    name: ClassVar[str]
    # An accepted job can be read back by its id (False: synchronous, the answer was the result).
    resumable: ClassVar[bool] = True

    def __init__(self, channel: Channel, http: ProviderHTTP, key: str) -> None:
        self.channel = channel
        self.http = http
        self.key = key
        self.base_url = channel.base_url.rstrip("/")

    @abstractmethod
    async def submit(self, req: Request) -> Remote:
        """Start the job; raise NotAccepted where it was not taken (use `refusal`)."""

    @abstractmethod
    async def poll(self, remote: Remote) -> Status:
        """The job's state now; transport errors propagate (the caller retries until timeout)."""

    async def cancel(self, remote: Remote) -> None:  # noqa: B027 - optional
        """Ask the provider to stop the job, where it can."""

    def refusal(self, response: Response, what: str) -> NotAccepted | RemoteFailed | None:
        """A submit answer that is not acceptance, classified; None for a 2xx."""
        code = response.status
        if 200 <= code < 300:
            return None
        detail = response.body[:300].decode("utf-8", "replace")
        message = f"{self.channel.name}: {what} answered HTTP {code}: {detail}"
        if code == 429 or code >= 500:
            return NotAccepted(message, retry_after=response.retry_after, same_channel=True)
        if code in (401, 402, 403):
            return NotAccepted(message)  # credentials or the provider account: the channel's
        # Anything else (400, 404, 422): the provider refused this request, unbilled.
        return NotAccepted(message, channel_fault=False)


@dataclass
class AttemptRecord:
    """One try of an order on a channel, as the attempt log stores it."""

    id: str
    order_id: str
    number: int
    channel: str
    provider: str
    state: str  # attempts.STATES
    remote_id: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: datetime | None = None


class AttemptLog(Protocol):
    """Where attempts are written (the worker's database); each call commits on its own."""

    async def history(self, order_id: str) -> list[AttemptRecord]: ...

    def take_planned(self, order_id: str) -> tuple[str, str] | None:
        """(attempt id, channel name) of the order's first try, when the worker wrote its
        `submitting` row in the claim's transaction; None otherwise. Once per order."""
        ...

    async def discard(self, attempt_id: str) -> None:
        """Delete a planned try's row that was never sent (its channel is no longer a route)."""
        ...

    async def begin(self, order_id: str, number: int, channel: Channel, images: int) -> str:
        """A `submitting` row, written before the provider is called; returns its id."""
        ...

    async def accepted(self, attempt_id: str, remote: Remote, *, deferred: bool = False) -> bool:
        """The provider took the job. `deferred`: written with the attempt's `finish` (a
        synchronous answer: the job is over and cannot be read back; if the worker stops before
        the finish, the row's `submitting` leaves the channel, as such an acceptance would).
        False: the row was no longer `submitting` (the order's next holder left the channel)."""
        ...

    async def progress(
        self, attempt_id: str, remote_status: str, queue_position: int | None
    ) -> None: ...

    def forget(self, attempt_id: str) -> None:
        """Drop what is held in memory for an attempt that ended without `finish` (an error
        nobody handled, a stop); its row stays as written for the next worker."""
        ...

    async def finish(
        self,
        attempt_id: str,
        state: str,
        *,
        cost: float = 0.0,
        error: str | None = None,
        retry_after: float | None = None,
        outputs: list[str] | None = None,
    ) -> None: ...
