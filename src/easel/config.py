"""One settings class, read from `EASEL_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EASEL_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("./easel-data")
    database_url: str = ""
    # PostgreSQL connections per process: kept, extra under load, and seconds a request waits
    # for one before it gets 503 with Retry-After.
    db_pool_size: int = 10
    db_pool_overflow: int = 10
    db_pool_timeout: float = 10.0
    catalog: Path | None = None
    host: str = "0.0.0.0"
    port: int = 7000
    public_url: str = ""
    secret_key: str = DEV_SECRET
    log_level: str = "INFO"

    # Request bounds.
    max_prompt_chars: int = 2500
    max_images_per_request: int = 16  # n; plans and models may allow fewer
    max_steps: int = 150  # denoising steps; a model may allow fewer (catalog max_steps)
    max_guidance: float = 30.0
    min_side: int = 256
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_webhook_url_chars: int = 2048
    max_idempotency_key_chars: int = 255
    orders_page_max: int = 100
    max_body_bytes: int = 64 * 1024 * 1024  # any request body, counted as it arrives
    max_json_bytes: int = 16 * 1024 * 1024  # a JSON body: room for one base64 reference image
    max_json_members: int = 1000  # keys and array items in one JSON body, all levels
    max_json_depth: int = 16  # nesting of a JSON body
    max_reference_images: int = 3  # images per order (an edit takes up to 3; each model its own)
    default_strength: float = 0.8

    # Queue and worker.
    lease_seconds: float = 60.0
    max_attempts: int = 3
    poll_interval: float = 1.0
    progress_interval: float = 0.2
    reaper_interval: float = 10.0
    worker_id: str = ""
    device: str = "auto"
    max_loaded_models: int = 2
    worker_stop_timeout: float = 600.0
    max_batch_images: int = 8  # images one pipeline call may make for compatible orders
    model_memory_gb: float = 0.0  # GiB of loaded models a worker keeps; 0: only the count cap
    prefer_loaded_seconds: float = 60.0  # longest an order waits behind loaded-model orders
    worker_heartbeat_seconds: float = 15.0  # `workers` table refresh; offline after 3 missed
    workers_listed_seconds: float = 24 * 3600.0  # GET /api/v1/workers: seen within this
    # `easel serve` restarts a child that died after child_restart_first seconds, doubling while
    # it keeps dying within 30 s of its start, at most child_restart_max; it never gives up.
    child_restart_first: float = 1.0
    child_restart_max: float = 60.0
    # An order for a model no live worker serves: "queue" (accepted; its status says what it
    # waits for) or "refuse" (503 with Retry-After: unserved_retry_after seconds, nothing charged).
    unserved: Literal["queue", "refuse"] = "queue"
    unserved_retry_after: int = 30

    # Outputs.
    url_ttl_seconds: int = 24 * 3600
    output_retention_days: float = 14.0
    sweep_interval: float = 300.0
    storage: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_public_base: str = ""

    # Webhooks: attempt k waits first * factor**(k-1) after the previous one (~21 h in all).
    webhook_timeout: float = 10.0
    # A claimed delivery's lease: 2 x webhook_timeout plus this margin to record the result; a
    # sender that died mid-delivery leaves it to be sent again when the lease runs out.
    webhook_lease_margin: float = 30.0
    webhook_max_attempts: int = 10
    webhook_retry_first: float = 30.0
    webhook_retry_factor: float = 2.5
    webhook_max_redirects: int = 3
    webhook_poll_interval: float = 1.0  # the sender looks for due deliveries this often when idle
    # Delivery isolation (services/webhook_sender.py): deliveries one sender process keeps in
    # flight, and at most this many to one endpoint (an account's scheme + host + port).
    webhook_max_in_flight: int = 64
    webhook_max_per_endpoint: int = 4
    # Deliveries a sender leases ahead, per endpoint it is sending to, beyond its slots: this
    # many more whenever fewer than this many wait there (so at most 2 x this - 1 wait per
    # endpoint); a delivery that ends 2xx hands its slot to the oldest of them at once (no
    # database pass in between). 0: none.
    webhook_claim_ahead: int = 4
    # Each attempt: seconds to connect, to the first byte of the answer after sending, and
    # webhook_timeout for all of it (redirects included); at most this much of the answer is read.
    webhook_connect_timeout: float = 5.0
    webhook_first_byte_timeout: float = 8.0
    webhook_max_response_bytes: int = 4096
    # After this many failures in a row an endpoint backs off as a whole: one probe delivery at a
    # time, spaced like retries (first * factor**k), at most endpoint_retry_max seconds apart.
    webhook_endpoint_failures: int = 5
    webhook_endpoint_retry_max: float = 3600.0
    # An endpoint failing for this long (no success in between) is disabled until re-enabled.
    webhook_disable_after_days: float = 5.0
    allow_private_urls: bool = False
    allowed_networks: list[str] = []

    # Reference images: by URL (fetched with the webhooks' address checks) or base64.
    reference_max_bytes: int = 10 * 1024 * 1024
    reference_min_side: int = 300
    reference_max_aspect: float = 2.5
    reference_max_pixels: int = 50_000_000
    reference_fetch_timeout: float = 15.0
    reference_max_redirects: int = 3

    # LoRAs by URL (plans with allow_lora_urls): fetched with the same address checks, at most
    # this many bytes within this many seconds, checked against their sha256 and kept by hash in
    # the worker's cache dir (default <data_dir>/loras).
    lora_max_bytes: int = 512 * 1024 * 1024
    lora_fetch_timeout: float = 300.0
    lora_cache_dir: Path | None = None

    # Prompt enhancement (docs/enhance.md): which enhancer a worker runs for `llm_enhance`
    # orders, and how long it may take before the original prompt is used.
    enhancer: Literal["template", "openai", "transformers", "off"] = "template"
    enhancer_base_url: str = "http://127.0.0.1:11434/v1"  # any OpenAI-compatible chat endpoint
    enhancer_model: str = "Qwen/Qwen2.5-0.5B-Instruct"  # openai: its name; transformers: repo/dir
    enhancer_api_key_env: str = "EASEL_ENHANCER_API_KEY"  # the env var that holds its key
    enhancer_max_tokens: int = 256
    enhance_timeout_seconds: float = 20.0
    enhance_cache_entries: int = 1024  # enhanced prompts a worker keeps in memory
    enhancer_max_response_bytes: int = 65536  # the longest chat endpoint answer read

    # Safety check (docs/safety.md): true checks every order's outputs whatever its plan and
    # request say; the classifier's threads; frames of a clip checked (first, middle, last and
    # every Nth).
    safety_force: bool = False
    safety_threads: int = 2
    safety_frame_every: int = 8
    safety_chunk: int = 16  # frames scored per classifier call (bounds its memory)
    # Local batches whose outputs are screened, stored and completed while the device generates
    # the next batch (each holds its outputs in memory); 0: screened before the next claim.
    finishing_batches: int = 1
    # A worker's upstream writes (attempt begins, order completions) that become ready while one
    # of its write transactions is running wait and go in the next one together: at most this
    # many in one transaction. 1: each in its own.
    group_commit_max: int = 64
    # Remote orders (one provider job each) a worker claims in one transaction, when its
    # upstream models have that much room; 1: one claim per transaction (the lowest latency:
    # several send the provider calls out in bursts).
    remote_claim_max: int = 1
    # Threads per loaded model that write output files (PNG, JPEG, WebP) in the background.
    encode_threads: int = 2
    # The optional prompt classifier (docs/safety.md): a text-classification model (repo id or
    # folder; empty: off) run by each API process after the word list; a prompt whose highest
    # score for one of `labels` reaches the threshold is refused. A check waits at most
    # timeout seconds; at most at_once run at a time; on failure or timeout: refused with 503
    # (closed) or passed (open).
    prompt_classifier: str = ""
    prompt_classifier_labels: list[str] = []
    prompt_classifier_threshold: float = 0.5
    prompt_classifier_timeout: float = 2.0
    prompt_classifier_at_once: int = 2
    prompt_classifier_on_error: Literal["closed", "open"] = "closed"

    # Rate limits by plan (catalog): counted in memory, or in Redis shared by every API process.
    rate_limits: bool = True  # false: no rate limits at all (a private deployment)
    rate_limit_storage: str = ""  # e.g. redis://127.0.0.1:6379/0; empty: this process's memory
    rate_limit_prefix: str = "easel:"  # Redis key prefix
    rate_limit_open_ttl: float = 3900.0  # an open-request slot a vanished process left expires

    # Waiting clients: server-sent order events, OpenAI synchronous waits, status long polls.
    # They all follow one change feed per API process (orders/changes.py): on SQLite it looks for
    # changed orders this often; on PostgreSQL it gathers notifications this long into one read.
    events_poll_interval: float = 0.25
    events_keepalive_interval: float = 15.0
    events_max_duration: float = 3600.0
    # Streams, waits and long polls one API process follows at once; above it: 503 with
    # Retry-After (per key and per account the plan's max_open_requests count them).
    max_waiters: int = 2000
    status_max_wait: float = 60.0  # longest ?wait= of GET /api/v1/status/{id}

    # OpenAI Images: a request waits for its order up to the timeout.
    openai_wait_timeout: float = 300.0
    openai_max_user_chars: int = 256

    # Speedups applied to a pipeline after it loads (backends/speedups.py); each can be turned off.
    # Compiling costs minutes per model and again per new batch or image size: off by default.
    compile: bool = False
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "max-autotune-no-cudagraphs"  # reduce-overhead / max-autotune add CUDA graphs
    channels_last: bool = True  # UNet and VAE convolutions in NHWC layout
    fuse_qkv: bool = True  # one projection matrix for attention's query, key and value
    sdpa: bool = True  # attention through torch's scaled_dot_product_attention
    vae_upcast: Literal["auto", "always", "off"] = "auto"  # auto: float16 VAEs that overflow
    vae_fp16_fix: str = ""  # local AutoencoderKL folder with fp16-safe weights (SDXL's fp16-fix)

    # Upstream providers (docs/providers.md): each call to a provider's API, the most bytes read
    # from any answer or output, and the time to download one output.
    upstream_request_timeout: float = 60.0
    # A remote worker spreads its connections to providers over httpx clients of about this
    # many each (one client's pool costs CPU per request in proportion to its connections).
    upstream_connections_per_client: int = 8
    upstream_max_output_bytes: int = 64 * 1024 * 1024
    upstream_max_output_pixels: int = 50_000_000  # an output image's width x height, checked first
    upstream_download_timeout: float = 60.0
    # Client status bodies name the route an order took (provider and channel, never ids, URLs or
    # costs); admin accounts always see it.
    expose_route: bool = False

    # Prometheus metrics (docs/operations.md). /metrics needs no API key.
    metrics: bool = True  # GET /metrics on the API; false: 404
    metrics_token: str = ""  # when set, /metrics and --metrics-port ask for Bearer <token>
    # Shared by the processes of one host that are scraped as one; empty: each process keeps its
    # own (`easel serve` with children then uses <data_dir>/metrics, cleared at its start).
    metrics_dir: str = ""
    metrics_port: int = 0  # `easel worker` / `easel services` alone: serve metrics here; 0: off

    admin_email: str = "admin@localhost"
    admin_plan: str = "mega"

    # Web console (docs/console.md): who may sign up (invite: admin-made links only), the plan a
    # sign-up starts on, how long a sign-in lasts, sign-in attempts per email and per address
    # within the window, reset and invite links' lifetime, and the SMTP server for reset links
    # (smtp://user:pass@host:port, smtps:// for TLS; empty: `easel accounts reset-link` prints it).
    signup: Literal["open", "invite", "closed"] = "open"
    signup_plan: str = "free"
    console_session_days: float = 30.0
    console_max_sessions: int = 20  # signed-in browsers per person; the oldest is signed out
    signin_attempts_per_email: int = 5
    signin_attempts_per_ip: int = 30
    signin_window_seconds: float = 900.0
    # Sign-ups, reset requests, resets and password changes per email and per address (same window)
    account_attempts_per_email: int = 5
    account_attempts_per_ip: int = 20
    password_hashes_at_once: int = 4  # argon2 hashes/verifications one API process runs at once
    reset_link_minutes: float = 60.0
    invite_link_days: float = 7.0
    smtp_url: str = ""
    smtp_from: str = "easel@localhost"
    console_page_size: int = 24  # orders, ledger rows, deliveries per console page

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.environment != "development" and self.secret_key in (DEV_SECRET, "", "changethis"):
            raise ValueError(
                "EASEL_SECRET_KEY is unset or left at its development default; set it to a long "
                "random value (`python -c 'import secrets; print(secrets.token_urlsafe(48))'`) "
                "or run with EASEL_ENVIRONMENT=development"
            )
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("EASEL_STORAGE=s3 needs EASEL_S3_BUCKET")
        if self.min_side % 8 or self.max_side % 8 or self.min_side > self.max_side:
            raise ValueError("EASEL_MIN_SIDE and EASEL_MAX_SIDE must be multiples of 8, min <= max")
        if self.webhook_max_in_flight < 1 or self.webhook_max_per_endpoint < 1:
            raise ValueError(
                "EASEL_WEBHOOK_MAX_IN_FLIGHT and EASEL_WEBHOOK_MAX_PER_ENDPOINT must be at least 1"
            )
        if self.group_commit_max < 1:
            raise ValueError("EASEL_GROUP_COMMIT_MAX must be at least 1")
        if self.remote_claim_max < 1:
            raise ValueError("EASEL_REMOTE_CLAIM_MAX must be at least 1")
        if self.webhook_claim_ahead < 0:
            raise ValueError("EASEL_WEBHOOK_CLAIM_AHEAD must be 0 or more")
        if self.webhook_endpoint_failures < 1:
            raise ValueError("EASEL_WEBHOOK_ENDPOINT_FAILURES must be at least 1")
        if self.prompt_classifier and not self.prompt_classifier_labels:
            raise ValueError(
                "EASEL_PROMPT_CLASSIFIER needs EASEL_PROMPT_CLASSIFIER_LABELS: the model's labels "
                'that refuse a prompt, as a JSON list (e.g. ["nsfw"])'
            )
        timeouts = (
            self.webhook_timeout,
            self.webhook_connect_timeout,
            self.webhook_first_byte_timeout,
        )
        if min(timeouts) <= 0:
            raise ValueError(
                "EASEL_WEBHOOK_TIMEOUT, EASEL_WEBHOOK_CONNECT_TIMEOUT and "
                "EASEL_WEBHOOK_FIRST_BYTE_TIMEOUT must be positive seconds"
            )
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'easel.db').resolve()}"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def loras_dir(self) -> Path:
        return self.lora_cache_dir or self.data_dir / "loras"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
