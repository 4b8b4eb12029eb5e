"""Animated scenes as plain data: meshes, per-frame transforms and cameras, all from one seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------- matrices (float64, column vectors)


def perspective(fovy_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    """OpenGL projection: view space (camera looks down -z) -> clip space, depth [-1, 1] in NDC."""
    f = 1.0 / math.tan(math.radians(fovy_deg) / 2)
    return np.array([[f / aspect, 0, 0, 0], [0, f, 0, 0],
                     [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)], [0, 0, -1, 0]])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """World -> view matrix (right-handed, camera at ``eye`` looking at ``target``)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right = right / np.linalg.norm(right)
    true_up = np.cross(right, fwd)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = right, true_up, -fwd
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def translate(v: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = v
    return m


def rotate(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about unit ``axis`` (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    c, s, t = math.cos(angle), math.sin(angle), 1 - math.cos(angle)
    m = np.eye(4)
    m[:3, :3] = [[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
                 [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
                 [t * x * z - s * y, t * y * z + s * x, t * z * z + c]]
    return m


def scale3(v: np.ndarray) -> np.ndarray:
    return np.diag([*v, 1.0])


# ---------------------------------------------------------------- meshes: (n, 8) float32 = position, normal, uv


def box() -> np.ndarray:
    """Unit cube [-0.5, 0.5]^3 with flat normals, uv 0..1 per face."""
    tris = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u, v = np.roll(np.eye(3), 1, axis=0)[axis], np.roll(np.eye(3), 2, axis=0)[axis]
            if sign < 0:
                u = -u
            corners = [(0, 0), (1, 0), (1, 1), (0, 0), (1, 1), (0, 1)]
            for a, b in corners:
                p = 0.5 * n + (a - 0.5) * u + (b - 0.5) * v
                tris.append([*p, *n, a, b])
    return np.asarray(tris, np.float32)


def uv_sphere(rows: int = 24, cols: int = 48, inside: bool = False) -> np.ndarray:
    """Unit-radius sphere with smooth normals (pointing inwards when ``inside``, for a sky dome)."""
    verts = []
    for i in range(rows):
        for j in range(cols):
            quad = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j), (i + 1, j + 1), (i, j + 1)]
            if inside:
                quad = quad[::-1]
            for a, b in quad:
                th, ph = math.pi * a / rows, 2 * math.pi * b / cols
                p = np.array([math.sin(th) * math.cos(ph), math.cos(th), -math.sin(th) * math.sin(ph)])
                verts.append([*p, *(-p if inside else p), b / cols, a / rows])
    return np.asarray(verts, np.float32)


def cylinder(segments: int = 32) -> np.ndarray:
    """Unit cylinder (radius 0.5, y in [-0.5, 0.5]) with smooth side normals and flat caps."""
    verts = []
    for j in range(segments):
        a0, a1 = 2 * math.pi * j / segments, 2 * math.pi * (j + 1) / segments
        c0, c1 = np.array([math.cos(a0), 0, -math.sin(a0)]), np.array([math.cos(a1), 0, -math.sin(a1)])
        u0, u1 = j / segments, (j + 1) / segments
        side = [(c0, -0.5, u0, 0), (c1, -0.5, u1, 0), (c1, 0.5, u1, 1), (c0, -0.5, u0, 0), (c1, 0.5, u1, 1), (c0, 0.5, u0, 1)]
        for c, y, u, v in side:
            verts.append([0.5 * c[0], y, 0.5 * c[2], *c, u, v])
        for y, n in ((0.5, 1.0), (-0.5, -1.0)):
            ring = [np.zeros(3), c0, c1] if n > 0 else [np.zeros(3), c1, c0]
            for c in ring:
                verts.append([0.5 * c[0], y, 0.5 * c[2], 0, n, 0, 0.5 + 0.5 * c[0], 0.5 + 0.5 * c[2]])
    return np.asarray(verts, np.float32)


def plane() -> np.ndarray:
    """Unit square in the xz plane facing +y."""
    q = [(-0.5, -0.5, 0, 0), (0.5, 0.5, 1, 1), (0.5, -0.5, 1, 0), (-0.5, -0.5, 0, 0), (-0.5, 0.5, 0, 1), (0.5, 0.5, 1, 1)]
    return np.asarray([[x, 0, z, 0, 1, 0, u, v] for x, z, u, v in q], np.float32)


MESHES = {"box": box, "sphere": uv_sphere, "cylinder": cylinder, "plane": plane, "sky": lambda: uv_sphere(16, 32, True)}


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneObject:
    """One mesh instance with a rigid motion over time."""

    mesh: str  # key of MESHES
    texture: int  # index into Scene.textures
    position: tuple[float, float, float]  # world position at frame 0
    velocity: tuple[float, float, float]  # world units per frame
    size: tuple[float, float, float]  # non-uniform scale (mesh units -> world)
    spin_axis: tuple[float, float, float]  # rotation axis (unit)
    spin: float  # radians per frame
    phase: float  # rotation at frame 0 (radians)
    uv_scale: float  # texture repeats across the mesh's uv range
    shininess: float  # Blinn-Phong exponent
    specular: float  # specular strength (0..1)
    unlit: bool = False  # sky: emits its texture, no lighting

    def model(self, t: float) -> np.ndarray:
        """Object -> world matrix at (fractional) frame ``t``."""
        pos = np.add(self.position, np.multiply(self.velocity, t))
        return translate(pos) @ rotate(np.array(self.spin_axis), self.phase + self.spin * t) @ scale3(np.array(self.size))


@dataclass(frozen=True)
class Camera:
    """A camera path: eye and target move linearly with a slow sway."""

    eye: tuple[float, float, float]  # world position at frame 0
    eye_velocity: tuple[float, float, float]  # world units per frame
    target: tuple[float, float, float]  # look-at point at frame 0
    target_velocity: tuple[float, float, float]  # world units per frame
    sway: float  # amplitude of a sinusoidal sideways sway (world units)
    fovy: float = 55.0  # vertical field of view (degrees)
    near: float = 0.1  # near plane (world units)
    far: float = 400.0  # far plane (world units)

    def eye_at(self, t: float) -> np.ndarray:
        return np.add(self.eye, np.multiply(self.eye_velocity, t)) + np.array([self.sway * math.sin(0.3 * t), 0, 0])

    def view(self, t: float) -> np.ndarray:
        """World -> view matrix at frame ``t``."""
        return look_at(self.eye_at(t), np.add(self.target, np.multiply(self.target_velocity, t)))

    def projection(self, aspect: float) -> np.ndarray:
        return perspective(self.fovy, aspect, self.near, self.far)


@dataclass(frozen=True)
class Light:
    """A point light."""

    position: tuple[float, float, float]  # world position at frame 0
    velocity: tuple[float, float, float]  # world units per frame
    color: tuple[float, float, float]  # linear RGB intensity


@dataclass(frozen=True)
class Scene:
    """Everything needed to render every frame of one clip."""

    seed: int  # the seed it was made from
    textures: tuple[str, ...]  # image paths (textures and sky)
    objects: tuple[SceneObject, ...]  # sky first, then ground, then props
    camera: Camera  # camera path
    lights: tuple[Light, ...]  # point lights
    ambient: float  # ambient light (linear)
    frames: int  # clip length


def _prop(rng: np.random.Generator, n_tex: int) -> SceneObject:
    mesh = str(rng.choice(["box", "sphere", "cylinder"]))
    s = rng.uniform(0.6, 2.2)
    size = (s, s * rng.uniform(0.6, 1.8), s) if mesh != "sphere" else (s, s, s)
    moving = rng.random() < 0.5
    return SceneObject(
        mesh=mesh, texture=int(rng.integers(1, n_tex)),
        position=(rng.uniform(-6, 6), size[1] / 2 + rng.uniform(0, 1.0), rng.uniform(-14, -2)),
        velocity=tuple(rng.uniform(-0.08, 0.08, 3) * [1, 0.3, 1]) if moving else (0.0, 0.0, 0.0),
        size=size, spin_axis=tuple(rng.normal(size=3) + [0, 2, 0]), spin=rng.uniform(-0.05, 0.05) if moving else 0.0,
        phase=rng.uniform(0, 6.3), uv_scale=float(rng.choice([1, 2])),
        shininess=float(rng.uniform(16, 128)), specular=float(rng.uniform(0.1, 0.8)))


def _fence(rng: np.random.Generator, n_tex: int) -> list[SceneObject]:
    """Thin bars or wires: sub-pixel detail at render resolution."""
    n = int(rng.integers(5, 14))
    x0, z = rng.uniform(-6, 0), rng.uniform(-10, -3)
    gap, w, h = rng.uniform(0.25, 0.6), rng.uniform(0.02, 0.06), rng.uniform(1.5, 3.5)
    tex = int(rng.integers(1, n_tex))
    bars = [SceneObject("box", tex, (x0 + i * gap, h / 2, z), (0.0, 0.0, 0.0), (w, h, w), (0.0, 1.0, 0.0), 0.0, 0.0, 1.0, 64.0, 0.6)
            for i in range(n)]
    rail = SceneObject("cylinder", tex, (x0 + (n - 1) * gap / 2, h * 0.8, z), (0.0, 0.0, 0.0),
                       (w * 0.7, (n - 1) * gap + 0.4, w * 0.7), (0.0, 0.0, 1.0), 0.0, math.pi / 2, 1.0, 64.0, 0.6)
    return [*bars, rail]


def make_scene(seed: int, texture_pool: list[str], frames: int = 12) -> Scene:
    """A random scene; the same seed and pool always give the same scene."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(texture_pool), size=min(6, len(texture_pool)), replace=False)
    textures = tuple(texture_pool[int(i)] for i in picks)
    n_tex = len(textures)
    sky = SceneObject("sky", 0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (150.0, 150.0, 150.0), (0.0, 1.0, 0.0), 0.0,
                      rng.uniform(0, 6.3), 1.0, 1.0, 0.0, unlit=True)
    ground = SceneObject("plane", int(rng.integers(1, n_tex)), (0.0, 0.0, -10.0), (0.0, 0.0, 0.0), (60.0, 1.0, 60.0),
                         (0.0, 1.0, 0.0), 0.0, 0.0, float(rng.choice([8, 12, 16])), 32.0, float(rng.uniform(0.05, 0.4)))
    props = [_prop(rng, n_tex) for _ in range(int(rng.integers(4, 9)))]
    if rng.random() < 0.8:
        props += _fence(rng, n_tex)
    speed = rng.uniform(0.02, 0.12)
    heading = rng.normal(size=2)
    heading = heading / np.linalg.norm(heading) * speed
    cam = Camera(eye=(rng.uniform(-3, 3), rng.uniform(1.2, 3.5), rng.uniform(2, 6)),
                 eye_velocity=(float(heading[0]), rng.uniform(-0.01, 0.01), float(heading[1])),
                 target=(rng.uniform(-2, 2), rng.uniform(0.3, 1.5), rng.uniform(-10, -5)),
                 target_velocity=tuple(rng.uniform(-0.06, 0.06, 3) * [1, 0.2, 1]), sway=float(rng.uniform(0, 0.5)))
    lights = tuple(Light(position=(rng.uniform(-8, 8), rng.uniform(3, 9), rng.uniform(-12, 2)),
                         velocity=tuple(rng.uniform(-0.1, 0.1, 3)), color=tuple(rng.uniform(0.4, 1.0, 3) * rng.uniform(0.6, 1.2)))
                   for _ in range(2))
    return Scene(seed=seed, textures=textures, objects=(sky, ground, *props), camera=cam, lights=lights,
                 ambient=float(rng.uniform(0.15, 0.35)), frames=frames)
