"""vsr-upscale streaming engine."""
