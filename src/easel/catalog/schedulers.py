"""Scheduler names a catalog may pick, and the families they cannot drive. Read by the catalog
loader (to check a catalog) and by the diffusers backends (to build the scheduler)."""

from __future__ import annotations

from typing import Any

# Catalog scheduler name -> diffusers class name and the options it is built with.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
}
KEEP_SCHEDULER = "default"  # the pipeline's own scheduler (undoes a shipped choice)
# Families sampled by flow matching: a discrete-time scheduler cannot drive them.
FLOW_MATCHING_FAMILIES = ("z-image", "qwen-image", "qwen-image-edit")


def is_flow_matching(family: str) -> bool:
    return family in FLOW_MATCHING_FAMILIES
