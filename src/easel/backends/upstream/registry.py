"""Provider name (a channel's `provider`) -> its class; a plain dict, as backends/registry.py."""

from __future__ import annotations

from easel.backends.upstream.base import Provider
from easel.backends.upstream.easel_tasks import EaselTasksProvider
from easel.backends.upstream.fal import FalProvider
from easel.backends.upstream.kie import KieProvider
from easel.backends.upstream.openai import OpenAIProvider
from easel.backends.upstream.replicate import ReplicateProvider

PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "kie": KieProvider,
    "fal": FalProvider,
    "replicate": ReplicateProvider,
    "easel-tasks": EaselTasksProvider,
}
