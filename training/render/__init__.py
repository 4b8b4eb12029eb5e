"""Rendered training data: animated 3D scenes -> G-buffers (moderngl/EGL) and supersampled targets."""
