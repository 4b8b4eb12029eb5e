"""Rasterise a Scene with moderngl (EGL, headless): G-buffers at render size, supersampled colour targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.render.scene import MESHES, Scene, SceneObject, translate
from training.render.shaders import ATTRIBUTES, FRAGMENT, VERTEX, VERTEX_FORMAT

TEXTURE_MAX_SIDE = 1024  # larger images are downsized on upload (they are mipmapped anyway)


@dataclass(frozen=True)
class GBuffer:
    """One rendered frame at render resolution; arrays are top row first (image convention)."""

    color: np.ndarray  # (H, W, 3) float32, display-referred colour in [0, 1]
    depth: np.ndarray  # (H, W) float32, device depth in [0, 1]: 0 = near plane, 1 = far plane (not inverted)
    motion: np.ndarray  # (H, W, 2) float32, current -> previous position in render pixels, (x right, y down)
    normals: np.ndarray  # (H, W, 3) float32, view-space unit normals (x right, y up, z towards the camera)
    albedo: np.ndarray  # (H, W, 3) float32, unlit surface colour in [0, 1]
    jitter: tuple[float, float]  # projection offset in render pixels (x right, y down), FSR2 sign
    view_proj: np.ndarray  # (4, 4) unjittered world -> clip of this frame
    view_proj_prev: np.ndarray  # (4, 4) unjittered world -> clip of the previous frame


def jitter_matrix(jitter: tuple[float, float], width: int, height: int) -> np.ndarray:
    """Clip-space translation that moves the image content by ``jitter`` render pixels (x right, y down)."""
    return translate(np.array([2.0 * jitter[0] / width, -2.0 * jitter[1] / height, 0.0]))


def _gl(m: np.ndarray) -> bytes:
    """Row-major numpy matrix -> GLSL column-major bytes."""
    return np.ascontiguousarray(m.T, dtype="f4").tobytes()


class Renderer:
    """Owns one headless GL context; use as a context manager so the context is always released."""

    def __init__(self, backend: str = "egl") -> None:
        import moderngl

        self._mgl = moderngl
        self.ctx = moderngl.create_context(standalone=True, backend=backend)
        self.prog = self.ctx.program(vertex_shader=VERTEX, fragment_shader=FRAGMENT)
        self.vaos = {}
        for name, make in MESHES.items():
            vbo = self.ctx.buffer(make().tobytes())
            self.vaos[name] = self.ctx.vertex_array(self.prog, [(vbo, VERTEX_FORMAT, *ATTRIBUTES)])
        self._textures: dict[str, object] = {}
        self._fbos: dict[tuple[int, int, bool], object] = {}

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every GL object and the context."""
        self.ctx.__enter__()  # objects must be released in their own context
        for t in self._textures.values():
            t.release()
        for fbo, attachments in self._fbos.values():
            fbo.release()
            for a in attachments:
                a.release()
        self._textures.clear()
        self._fbos.clear()
        self.ctx.__exit__(None, None, None)
        self.ctx.release()

    def _texture(self, path: str):
        if path not in self._textures:
            from PIL import Image

            img = Image.open(path).convert("RGB")
            if max(img.size) > TEXTURE_MAX_SIDE:
                k = TEXTURE_MAX_SIDE / max(img.size)
                img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.LANCZOS)
            tex = self.ctx.texture(img.size, 3, img.tobytes())
            tex.build_mipmaps()
            tex.filter = (self._mgl.LINEAR_MIPMAP_LINEAR, self._mgl.LINEAR)
            tex.anisotropy = 8.0
            self._textures[path] = tex
        return self._textures[path]

    def drop_textures(self) -> None:
        """Free the textures of finished scenes."""
        self.ctx.__enter__()
        for t in self._textures.values():
            t.release()
        self._textures.clear()
        self.ctx.__exit__(None, None, None)

    def _fbo(self, h: int, w: int, full: bool):
        key = (h, w, full)
        if key not in self._fbos:
            if full:
                atts = [self.ctx.texture((w, h), 4, dtype="f4") for _ in range(4)]
            else:
                atts = [self.ctx.texture((w, h), 4, dtype="f1")]
            depth = self.ctx.depth_renderbuffer((w, h))
            self._fbos[key] = (self.ctx.framebuffer(color_attachments=atts, depth_attachment=depth), [*atts, depth])
        return self._fbos[key][0]

    def _draw(self, scene: Scene, t: float, h: int, w: int, jitter: tuple[float, float], lod_bias: float) -> tuple[np.ndarray, np.ndarray]:
        cam = scene.camera
        proj = cam.projection(w / h)
        view, view_prev = cam.view(t), cam.view(t - 1)
        vp, vp_prev = proj @ view, proj @ view_prev
        u = self.prog
        u["view"].write(_gl(view))
        u["proj_jit"].write(_gl(jitter_matrix(jitter, w, h) @ proj))
        u["view_proj"].write(_gl(vp))
        u["view_proj_prev"].write(_gl(vp_prev))
        u["viewport"].value = (float(w), float(h))
        u["eye"].value = tuple(cam.eye_at(t))
        u["lod_bias"].value = lod_bias
        u["ambient"].value = scene.ambient
        u["light_pos"].write(np.array([np.add(li.position, np.multiply(li.velocity, t)) for li in scene.lights], "f4").tobytes())
        u["light_col"].write(np.array([li.color for li in scene.lights], "f4").tobytes())
        self.ctx.enable(self._mgl.DEPTH_TEST)
        for obj in scene.objects:
            self._draw_object(scene, obj, t)
        return vp, vp_prev

    def _draw_object(self, scene: Scene, obj: SceneObject, t: float) -> None:
        m, m_prev = obj.model(t), obj.model(t - 1)
        if obj.mesh == "sky":  # the dome travels with the camera, so only rotation moves it on screen
            m, m_prev = translate(scene.camera.eye_at(t)) @ m, translate(scene.camera.eye_at(t - 1)) @ m_prev
        u = self.prog
        u["model"].write(_gl(m))
        u["model_prev"].write(_gl(m_prev))
        u["uv_scale"].value = obj.uv_scale
        u["shininess"].value = obj.shininess
        u["specular"].value = obj.specular
        u["unlit"].value = obj.unlit
        self._texture(scene.textures[obj.texture]).use(0)
        u["tex"].value = 0
        self.vaos[obj.mesh].render()

    def gbuffer(self, scene: Scene, t: int, size: tuple[int, int], jitter: tuple[float, float] = (0.0, 0.0),
                lod_bias: float = -1.0) -> GBuffer:
        """Frame ``t`` of ``scene`` at ``size`` = (H, W), one sample per pixel, with ``jitter``."""
        h, w = size
        with self.ctx:  # make this context current: another Renderer may have been used or closed since
            fbo = self._fbo(h, w, True)
            fbo.use()
            # Empty pixels read as: motion 0, depth 1 (far), normal (0, 0, 1); the sky dome normally covers them.
            fbo.clear(0.0, 0.0, 1.0, 0.0, depth=1.0)
            vp, vp_prev = self._draw(scene, float(t), h, w, jitter, lod_bias)
            planes = [np.frombuffer(fbo.read(components=4, attachment=i, dtype="f4"), "f4").reshape(h, w, 4)[::-1]
                      for i in range(4)]
        color, normal, motion, albedo = planes
        return GBuffer(color=np.ascontiguousarray(color[..., :3]), depth=np.ascontiguousarray(motion[..., 2]),
                       motion=np.ascontiguousarray(motion[..., :2]), normals=np.ascontiguousarray(normal[..., :3]),
                       albedo=np.ascontiguousarray(albedo[..., :3]), jitter=(float(jitter[0]), float(jitter[1])),
                       view_proj=vp, view_proj_prev=vp_prev)

    def target(self, scene: Scene, t: int, size: tuple[int, int], supersample: int = 2) -> np.ndarray:
        """Antialiased colour of frame ``t`` at ``size`` = (H, W): ``supersample``^2 samples per pixel, box filtered."""
        h, w = size
        k = supersample
        with self.ctx:
            fbo = self._fbo(h * k, w * k, False)
            fbo.use()
            fbo.clear(0.0, 0.0, 0.0, 1.0, depth=1.0)
            self._draw(scene, float(t), h * k, w * k, (0.0, 0.0), 0.0)
            img = np.frombuffer(fbo.read(components=3, attachment=0), np.uint8).reshape(h * k, w * k, 3)[::-1]
        return img.reshape(h, k, w, k, 3).astype(np.float32).mean(axis=(1, 3)) / 255.0


def texture_pool(root: str | Path, split: str) -> list[str]:
    """Texture images of ``split``: every 5th image (sorted) is held out for test scenes."""
    root = Path(root)
    paths = sorted(str(p) for sub in ("sunhays80", "urban100_half") for p in (root / "images" / sub).glob("*.webp"))
    if not paths:
        raise FileNotFoundError(f"no textures under {root}/images/{{sunhays80,urban100_half}}; pass --data-root")
    held = [p for i, p in enumerate(paths) if i % 5 == 0]
    return held if split == "test" else [p for i, p in enumerate(paths) if i % 5 != 0]
