"""Dependency telemetry off by default: documented opt-outs set before onnxruntime, Flower or Ray load."""

from __future__ import annotations

import os
from typing import Any

# variable -> value that turns the dependency's telemetry off (docs/privacy.md says what each one records).
# Set with setdefault: a user who exports another value keeps it.
OPT_OUTS: dict[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime >= 1.29 (Linux/macOS 1DS uploader, device id, offline event cache)
    "FLWR_TELEMETRY_ENABLED": "0",  # Flower's usage events (POST to telemetry.flower.ai)
    "FLWR_DISABLE_UPDATE_CHECK": "1",  # Flower's version check against its servers
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray's usage stats, sent hourly to usage-stats.ray.io
}
ORT_QUIET = 4  # session log severity: FATAL only, so onnxruntime's ERROR lines never precede our one-line error


def apply_opt_outs() -> None:
    """Set every telemetry opt-out that the environment does not already decide."""
    for name, value in OPT_OUTS.items():
        os.environ.setdefault(name, value)


def quiet_onnxruntime() -> Any:
    """``import onnxruntime`` with the opt-outs applied; returns the module.

    The environment variable must be set before onnxruntime initialises (``apply_opt_outs`` runs when ``engine``
    is imported); the API call below also covers a host program that imported onnxruntime first.
    """
    apply_opt_outs()
    import onnxruntime as ort

    if os.environ.get("ORT_DISABLE_TELEMETRY") == "1" and hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    return ort
