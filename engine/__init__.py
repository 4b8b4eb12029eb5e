"""vsr-upscale streaming engine."""

from engine.privacy import apply_opt_outs

apply_opt_outs()  # before any dependency that records telemetry can load (docs/privacy.md)


def __getattr__(name: str):
    """Lazy public names, so `import engine` stays light (no torch)."""
    if name == "RenderUpscaler":
        from engine.render_api import RenderUpscaler

        return RenderUpscaler
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
