"""Attempts at the account forms (sign-in, sign-up, reset...) counted per email and per client
address through the rate limiter's storage (api/ratelimit.py: memory, or Redis shared by every
API process); each attempt is counted before its work is done."""

from __future__ import annotations

from easel.api.state import AppState

WHAT = {
    "sign-in": "sign-in attempts",
    "sign-up": "sign-ups",
    "forgot": "reset requests",
    "reset": "password resets",
    "password": "password changes",
}


def _limits(state: AppState, action: str) -> dict[str, int]:
    s = state.settings
    if action == "sign-in":
        return {"email": s.signin_attempts_per_email, "ip": s.signin_attempts_per_ip}
    return {"email": s.account_attempts_per_email, "ip": s.account_attempts_per_ip}


async def refused(state: AppState, action: str, ip: str, email: str = "") -> str | None:
    """Count one `action` from `ip` (and for `email`); why it is refused, or None."""
    window = state.settings.signin_window_seconds
    for kind, key in (("email", email), ("ip", ip)):
        if not key:
            continue
        most = _limits(state, action)[kind]
        wait = await state.limits.attempt(f"{action}:{kind}:{key}", most, window)
        if wait is not None:
            who = "this email" if kind == "email" else "this address"
            reset = ", or reset the password" if action == "sign-in" else ""
            return f"too many {WHAT[action]} for {who}; wait {wait} s and try again{reset}"
    return None


async def forget(state: AppState, action: str, email: str) -> None:
    """A sign-in that succeeded clears its email's count (not its address's)."""
    most = _limits(state, action)["email"]
    await state.limits.forget(f"{action}:email:{email}", most, state.settings.signin_window_seconds)
