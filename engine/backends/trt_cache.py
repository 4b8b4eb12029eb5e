"""TensorRT read side: engine cache keys, sidecars, profiles, GPU identity, stale engines, module import."""

from __future__ import annotations

import hashlib
import json
import os
import importlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.errors import BackendError, UsageError

HW = tuple[int, int]  # (height, width) of the LR input in pixels
# static LR input sizes: 270p is the x4 -> 1080p input (rvsr-m x4), which must not fall into the dynamic profile
PRESETS: dict[str, HW] = {"270p": (270, 480), "540p": (540, 960), "720p": (720, 1280), "1080p": (1080, 1920)}
DYNAMIC_RANGE: tuple[HW, HW, HW] = ((16, 16), (720, 1280), (1080, 1920))  # min, opt, max of the fallback
SIDECAR_VERSION = 1  # bump when the sidecar layout changes; older sidecars then read as stale


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile, in LR input pixels (hidden/G-buffer shapes follow from the metadata)."""

    min_hw: HW  # smallest input the engine accepts
    opt_hw: HW  # size the tactics are chosen for
    max_hw: HW  # largest input the engine accepts

    @property
    def static(self) -> bool:
        """True when min == opt == max (a static engine: fastest, one size only)."""
        return self.min_hw == self.opt_hw == self.max_hw

    @property
    def slug(self) -> str:
        """Canonical text form, also accepted by :func:`parse_profile`."""
        parts = [f"{h}x{w}" for h, w in (self.min_hw, self.opt_hw, self.max_hw)]
        return parts[0] if self.static else ":".join(parts)

    def accepts(self, hw: HW) -> bool:
        """Whether an LR input of size ``hw`` is inside this profile."""
        return all(lo <= v <= hi for lo, v, hi in zip(self.min_hw, hw, self.max_hw))

    def shapes(self, channels: int, factor: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) NCHW shapes of a tensor with ``channels`` at ``factor`` x the LR size."""
        return tuple((1, channels, h * factor, w * factor) for h, w in (self.min_hw, self.opt_hw, self.max_hw))

    def chroma_shapes(self, channels: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) of chroma planes: from 4:2:0 (half size, rounded up) at min and opt to 4:4:4 at max,
        so one engine, static in luma, takes either subsampling."""
        (h0, w0), (h1, w1), (h2, w2) = self.min_hw, self.opt_hw, self.max_hw
        return (1, channels, -(-h0 // 2), -(-w0 // 2)), (1, channels, -(-h1 // 2), -(-w1 // 2)), (1, channels, h2, w2)


def _hw(text: str) -> HW:
    if text.strip() in PRESETS:
        return PRESETS[text.strip()]
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise UsageError(f"bad size {text!r}: expected HxW in LR pixels, e.g. 540x960")
    return int(m[1]), int(m[2])


def parse_profile(text: str) -> Profile:
    """``270p|540p|720p|1080p`` (static), ``dynamic``, ``HxW`` (static) or ``HxW:HxW:HxW`` (min:opt:max)."""
    text = text.strip().lower()
    if text in PRESETS:
        return Profile(PRESETS[text], PRESETS[text], PRESETS[text])
    if text == "dynamic":
        return Profile(*DYNAMIC_RANGE)
    parts = text.split(":")
    if len(parts) == 1:
        hw = _hw(parts[0])
        return Profile(hw, hw, hw)
    if len(parts) != 3:
        raise UsageError(f"bad profile {text!r}: use 270p, 540p, 720p, 1080p, dynamic, HxW or "
                         "MINHxMINW:OPTHxOPTW:MAXHxMAXW")
    lo, opt, hi = (_hw(p) for p in parts)
    if not (Profile(lo, lo, hi).accepts(opt) and lo[0] <= hi[0] and lo[1] <= hi[1]):
        raise UsageError(f"bad profile {text!r}: need min <= opt <= max in both H and W")
    return Profile(lo, opt, hi)


def profile_for(hw: HW) -> Profile:
    """The profile an input size should use: its static preset when it is one, else the dynamic fallback."""
    for preset in PRESETS.values():
        if preset == tuple(hw):
            return Profile(preset, preset, preset)
    return Profile(*DYNAMIC_RANGE)


def parse_target(text: str) -> str:
    """``sm89``, ``SM89`` or ``8.9`` -> canonical ``sm89``."""
    t = text.strip().lower()
    m = re.fullmatch(r"sm_?(\d{2,3})", t) or re.fullmatch(r"(\d{1,2})\.(\d)", t)
    if not m:
        raise UsageError(f"bad compute capability {text!r}: expected e.g. sm89 or 8.9")
    return f"sm{m[1]}{m[2]}" if m.lastindex == 2 else f"sm{m[1]}"


@dataclass(frozen=True)
class Device:
    """The CUDA device engines are built for or run on."""

    name: str  # e.g. "NVIDIA GeForce RTX 4090"
    sm: str  # compute capability, e.g. "sm89"


def current_device(index: int = 0) -> Device | None:
    """Device ``index`` via torch when it has CUDA, else cuda-python (cuda-bindings); None without a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(index)
            return Device(torch.cuda.get_device_name(index), f"sm{major}{minor}")
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, props = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        return None
    return Device(props.name.decode(errors="replace").rstrip("\0"), f"sm{props.major}{props.minor}")


@dataclass(frozen=True)
class EngineKey:
    """Every input that changes a built engine; two engines with equal keys are interchangeable."""

    onnx_sha256: str  # hash of the ONNX file bytes (graph + weights + metadata)
    profile: str  # Profile.slug: LR input min:opt:max
    precision: str  # "fp32" or "fp16"
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    trt_version: str  # version of the library that built it
    gpu_name: str  # device name; "" for TensorRT-RTX AOT engines, which run on any GPU of the targets
    targets: tuple[str, ...]  # compute capabilities the engine holds code for, e.g. ("sm89",)

    @property
    def digest(self) -> str:
        """sha256 over all fields."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def filename(self, stem: str) -> str:
        """Readable, unique file name: the fields a person checks first, then the digest."""
        prof = self.profile.replace(":", "-")
        sms = "+".join(self.targets)
        return f"{stem}.{self.precision}.{prof}.{sms}.{self.flavour}-{self.trt_version}.{self.digest[:12]}.engine"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$VSR_ENGINE_CACHE`` or ``~/.cache/vsr-upscale/engines``."""
    env = os.environ.get("VSR_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vsr-upscale" / "engines"


def sidecar_path(engine: Path) -> Path:
    """The JSON written beside every engine: its key, its bytes' hash, build time."""
    return engine.with_name(engine.name + ".json")


def write_sidecar(engine: Path, key: EngineKey, build_s: float, meta: dict[str, str] | None = None) -> None:
    """Record ``key`` (and the ONNX's ``vsr.*`` metadata, for the backend's GraphSpec) beside ``engine``, atomically."""
    doc = {"version": SIDECAR_VERSION, "key": asdict(key), "engine_sha256": file_sha256(engine), "build_s": build_s,
           "meta": meta or {}}
    tmp = sidecar_path(engine).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, sidecar_path(engine))


def read_key(engine: Path) -> EngineKey:
    """The key an engine was built with; BackendError for a foreign, modified or outdated engine."""
    side = sidecar_path(engine)
    if not engine.exists():
        raise BackendError(f"engine {engine} does not exist; build it with `vsr-export trt`")
    try:
        doc = json.loads(side.read_text())
        key = EngineKey(**{**doc["key"], "targets": tuple(doc["key"]["targets"])})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BackendError(f"engine {engine.name} has no valid {side.name} (foreign engine, not built by "
                           "vsr-export); rebuild it with `vsr-export trt`") from e
    if doc.get("version") != SIDECAR_VERSION:
        raise BackendError(f"engine {engine.name} was recorded by an older vsr-export; rebuild it")
    if doc.get("engine_sha256") != file_sha256(engine):
        raise BackendError(f"engine {engine.name} changed since it was built (truncated or replaced); rebuild it")
    return key


def runtime_cache_path(engine: Path, device: Device | None) -> Path:
    """TensorRT-RTX's JIT-kernel cache for ``engine`` on ``device`` (the cache also rejects other drivers)."""
    return engine.with_name(f"{engine.name}.{device.sm if device else 'nogpu'}.runtime-cache")


def read_meta(engine: Path) -> dict[str, str]:
    """The ONNX ``vsr.*`` metadata recorded beside an engine (call :func:`read_key` first to validate it)."""
    return dict(json.loads(sidecar_path(engine).read_text()).get("meta", {}))


def mismatch(found: EngineKey, want: EngineKey) -> str | None:
    """Why an engine built with ``found`` cannot serve ``want`` (None when it can). ``want.targets`` holds the
    device's one compute capability; a portable AOT engine (``gpu_name == ""``) serves any GPU of its targets."""
    diffs = [f"{f}: engine {getattr(found, f)!r}, wanted {getattr(want, f)!r}"
             for f in ("onnx_sha256", "profile", "precision", "flavour", "trt_version")
             if getattr(found, f) != getattr(want, f)]
    if found.gpu_name and found.gpu_name != want.gpu_name:
        diffs.append(f"GPU: engine built on {found.gpu_name!r}, this is {want.gpu_name!r}")
    if not set(want.targets) <= set(found.targets) and found.targets != ("portable",):
        diffs.append(f"compute capability: engine holds {'+'.join(found.targets)}, "
                     f"this GPU is {'+'.join(want.targets)}")
    return "; ".join(diffs) or None


FLAVOURS = ("tensorrt", "tensorrt_rtx")  # module names; the API names are the same in both
NO_RTX_TARGET = {"sm90": "Hopper", "sm100": "Blackwell datacenter", "sm103": "Blackwell datacenter",
                  "sm110": "Thor", "sm70": "Volta", "sm72": "Xavier"}  # known GPUs TensorRT-RTX cannot target
_INVALID_BITS = {1: "built by another TensorRT-RTX version", 2: "no code for this GPU's compute capability",
                 4: "CUDA driver too old", 8: "CUDA runtime too old", 16: "not enough GPU memory",
                 32: "malformed (not a TensorRT-RTX engine)", 64: "CUDA error while checking"}


def import_trt(flavour: str = "auto", prefer_rtx: bool = False) -> tuple[ModuleType, str]:
    """The TensorRT module and its flavour name; BackendError saying what is missing."""
    if flavour not in ("auto", *FLAVOURS):
        raise UsageError(f"unknown TensorRT flavour {flavour!r}; use one of auto, {', '.join(FLAVOURS)}")
    order = (flavour,) if flavour != "auto" else (FLAVOURS[::-1] if prefer_rtx else FLAVOURS)
    errors = []
    for name in order:
        try:
            return importlib.import_module(name), name
        except (ImportError, OSError) as e:  # OSError: wheel present but its shared libraries are not
            errors.append(f"{name}: {e}")
    raise BackendError(f"{'/'.join(order)} not importable ({'; '.join(errors)}); "
                       "pip install tensorrt-rtx (CPU AOT builds, RTX GPUs) or tensorrt (GPU machine)")


def is_rtx(trt: ModuleType) -> bool:
    """Whether ``trt`` is TensorRT-RTX (strongly typed only, AOT compute-capability targets, runtime cache)."""
    return trt.__name__.split(".")[0] == "tensorrt_rtx"


def trt_major(trt: ModuleType) -> int:
    """Major version of a `tensorrt` module (TensorRT-RTX numbers from 1 and counts as strongly typed)."""
    return int(trt.__version__.split(".")[0])


def no_rtx_target(sm: str) -> str:
    """The sentence for a compute capability TensorRT-RTX cannot build for."""
    return f"TensorRT-RTX has no engine for {sm.upper()} ({NO_RTX_TARGET.get(sm, 'not an RTX target')})"


def write_atomic(path: Path, data: Any) -> None:
    """Write bytes-like ``data`` via a temporary file, so readers never see half an engine or cache."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(data))
    os.replace(tmp, path)


def engine_validity(trt: ModuleType, runtime: Any, blob: bytes) -> str | None:
    """TensorRT-RTX's own header check of a serialized engine on this machine (None: usable or not checkable)."""
    if not hasattr(runtime, "get_engine_validity"):
        return None
    validity, bits = runtime.get_engine_validity(blob)
    if validity == trt.EngineValidity.VALID:
        return None
    why = [text for bit, text in _INVALID_BITS.items() if bits & bit] or ["reason not reported"]
    kind = "suboptimal" if validity == trt.EngineValidity.SUBOPTIMAL else "invalid"
    return f"engine is {kind} here: {', '.join(why)}"


def unavailable_reason(flavour: str = "auto") -> str | None:
    """Why the TensorRT backend cannot run here (None when it can), as precisely as the machine allows."""
    try:
        trt, found = import_trt(flavour)
    except BackendError as e:
        return str(e)
    device = current_device()  # torch with CUDA, else cuda-python: the same libraries that give device memory
    if device is None:
        return "no CUDA device (neither torch with CUDA nor cuda-python sees one)"
    if found == "tensorrt_rtx":
        known = [n.lower() for n in trt.ComputeCapability.__members__ if n.startswith("SM")]
        if device.sm not in known:
            return f"{no_rtx_target(device.sm)} ({device.name}); install tensorrt for this GPU"
    return None


def find_builder() -> Any | None:
    """The engine builder installed beside the engine (export.tensorrt:engine_for, registered as the
    ``vsr_upscale.engine_builders`` entry point ``tensorrt``), or None: then only prebuilt engines run."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="vsr_upscale.engine_builders"):
        if ep.name == "tensorrt":
            return ep.load()  # type: ignore[no-any-return]
    return None
