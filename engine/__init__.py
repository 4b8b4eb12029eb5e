"""vsr-upscale streaming engine."""


def __getattr__(name: str):
    """Lazy public names, so `import engine` stays light (no torch)."""
    if name == "RenderUpscaler":
        from engine.render_api import RenderUpscaler

        return RenderUpscaler
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
