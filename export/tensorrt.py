"""ONNX -> TensorRT engine, one code path for TensorRT 10/11 (`tensorrt`) and TensorRT-RTX (`tensorrt_rtx`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.backends.trt_cache import (DYNAMIC_RANGE, NO_RTX_TARGET, Device, EngineKey, Profile, current_device,
                                       default_cache_dir, file_sha256, import_trt, is_rtx, mismatch, no_rtx_target,
                                       read_key, trt_major, write_atomic, write_sidecar)
from engine.errors import BackendError, UsageError

Report = Callable[[str], None]  # receives one human-readable progress line
# what TensorRT-RTX's "no --target" AOT build holds: its default portable set, resolved at run time
PORTABLE = ("portable",)


@dataclass(frozen=True)
class BuildOptions:
    """How to build one engine."""

    profile: Profile = Profile(*DYNAMIC_RANGE)  # LR input shapes the engine accepts
    precision: str = "fp32"  # "fp32" or "fp16" (strongly typed fp16 ONNX, or the FP16 flag on TensorRT 10)
    targets: tuple[str, ...] = ()  # compute capabilities for TensorRT-RTX AOT builds, e.g. ("sm89",); () = this GPU
    flavour: str = "auto"  # "tensorrt", "tensorrt_rtx" or "auto" (tensorrt_rtx when targets are named)
    workspace_mib: int = 0  # builder scratch memory limit; 0 = TensorRT's default (the device's memory)
    opt_level: int = 3  # builder optimisation level 0-5 (TensorRT's default is 3)
    timing_cache: Path | None = None  # TensorRT timing cache file, read and updated (ignored by TensorRT-RTX)


@dataclass(frozen=True)
class TensorInfo:
    """One I/O tensor of a built network, as TensorRT typed it (strongly typed: what the engine binds)."""

    dtype: str  # numpy dtype name: "uint8" frame planes, "float16" state in an fp16 engine, ...
    shapes: tuple[tuple[int, ...], ...]  # inputs: (min, opt, max) of the profile; outputs: (declared dims,), -1 dynamic


def network_io(trt: ModuleType, network: Any, profile: Any) -> dict[str, TensorInfo]:
    """Name -> TensorInfo of every network input and output (read back after parsing and configuring)."""
    def dtype(t: Any) -> str:
        return np.dtype(trt.nptype(t.dtype)).name

    ins = [network.get_input(i) for i in range(network.num_inputs)]
    outs = [network.get_output(i) for i in range(network.num_outputs)]
    io = {t.name: TensorInfo(dtype(t), tuple(tuple(int(d) for d in s) for s in profile.get_shape(t.name)))
          for t in ins}
    return io | {t.name: TensorInfo(dtype(t), (tuple(int(d) for d in t.shape),)) for t in outs}


@dataclass(frozen=True)
class BuildResult:
    """One engine on disk and how it came to be."""

    path: Path  # the engine file (its key sits beside it in <path>.json)
    key: EngineKey  # everything it was built from
    seconds: float  # build wall time; 0.0 when it came from the cache
    size: int  # engine file size in bytes
    cached: bool  # True when an existing, matching engine was reused
    io: dict[str, TensorInfo] = field(default_factory=dict)  # the built network's I/O ({} for a cached engine)


def _rtx_targets(trt: ModuleType, targets: tuple[str, ...], device: Device | None) -> tuple[str, ...]:
    if not targets:
        targets = (device.sm,) if device else PORTABLE
    known = [n.lower() for n in trt.ComputeCapability.__members__ if n.startswith("SM")]
    for t in targets:
        if t in PORTABLE:
            continue
        if t in NO_RTX_TARGET:
            raise BackendError(f"{no_rtx_target(t)}; use TensorRT 10/11 (`--flavour tensorrt`) on that GPU. "
                               f"TensorRT-RTX targets: {', '.join(known)}")
        if t not in known:
            raise UsageError(f"TensorRT-RTX {trt.__version__} cannot target {t}; it knows {', '.join(known)}")
    return targets


def _plan(opts: BuildOptions) -> tuple[ModuleType, str, tuple[str, ...], str]:
    """(module, flavour, targets, gpu name recorded in the key) for ``opts`` on this machine."""
    trt, flavour = import_trt(opts.flavour, prefer_rtx=bool(opts.targets))
    device = current_device()
    if flavour == "tensorrt_rtx":
        return trt, flavour, _rtx_targets(trt, opts.targets, device), ""
    if device is None:
        raise BackendError("no CUDA device: TensorRT builds on the GPU it targets; for CPU-only ahead-of-time "
                           "builds install tensorrt-rtx and name the target (--target sm89)")
    if opts.targets and opts.targets != (device.sm,):
        raise UsageError(f"TensorRT builds only for this GPU ({device.sm}); --target {'+'.join(opts.targets)} "
                         "needs tensorrt_rtx")
    return trt, flavour, (device.sm,), device.name


def _network_bytes(onnx_path: Path, precision: str, strongly_typed: bool) -> tuple[bytes, str, Any]:
    """ONNX bytes to parse, the engine precision, and the (possibly converted) proto."""
    from export.onnx import io_layout, load_onnx

    proto = load_onnx(onnx_path)
    io_layout(proto)  # fails early, with the fix, on ONNX files whose H/W are not symbolic
    src = {p.key: p.value for p in proto.metadata_props}.get("vsr.precision", "fp32")
    if src == "fp16":
        return onnx_path.read_bytes(), "fp16", proto
    if precision == "fp16" and strongly_typed:
        from export.fp16 import convert_to_fp16

        proto, _ = convert_to_fp16(proto, keep_io_types=False)  # fp16 state (half the bytes); planes stay integer
        return proto.SerializeToString(), "fp16", proto
    return onnx_path.read_bytes(), precision, proto


def _make_logger(trt: ModuleType, report: Report | None) -> Any:
    """An ILogger that keeps errors for the exception message and passes warnings to ``report``."""

    class Logger(trt.ILogger):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING and report:
                report(f"TensorRT warning: {msg}")

    return Logger()


def _progress_monitor(trt: ModuleType, report: Report | None, cancel: threading.Event) -> Any | None:
    """An IProgressMonitor printing the top two phase levels with elapsed time and stopping the build once
    ``cancel`` is set (TensorRT cancels when step_complete returns False); None where TensorRT lacks it."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.depth: dict[str, int] = {}
            self.t0 = time.perf_counter()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.depth[phase_name] = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            if report and self.depth[phase_name] <= 1:
                report(f"{time.perf_counter() - self.t0:6.1f}s {'  ' * self.depth[phase_name]}{phase_name}")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            self.depth.pop(phase_name, None)

    return Monitor()


def _configure(trt: ModuleType, builder: Any, network: Any, config: Any, proto: Any, opts: BuildOptions,
               targets: tuple[str, ...], fp16_flag: bool) -> Any:
    from export.onnx import io_layout

    if opts.workspace_mib > 0:  # a low limit can fail big profiles: rvsr-m x4 at 1080p needs > 1 GiB
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    config.builder_optimization_level = opts.opt_level
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if is_rtx(trt) and targets != PORTABLE:  # TensorRT proper always builds for the GPU it runs on
        config.num_compute_capabilities = len(targets)
        for i, t in enumerate(targets):
            if not config.set_compute_capability(getattr(trt.ComputeCapability, t.upper()), i):
                raise BackendError(f"TensorRT-RTX refused target {t}")
    layout = io_layout(proto)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rule = layout[tensor.name]
        if rule.fixed:  # non-image input (e.g. a jitter vector): one shape
            profile.set_shape(tensor.name, rule.fixed, rule.fixed, rule.fixed)
        elif rule.chroma:  # 4:2:0 and 4:4:4 planes both fit
            profile.set_shape(tensor.name, *opts.profile.chroma_shapes(rule.channels))
        else:
            profile.set_shape(tensor.name, *opts.profile.shapes(rule.channels, rule.factor))
    config.add_optimization_profile(profile)
    return profile


def _timing_cache(config: Any, path: Path | None) -> Any | None:
    if path is None:
        return None
    cache = config.create_timing_cache(path.read_bytes() if path.exists() else b"")
    if not config.set_timing_cache(cache, False):  # from another GPU/version: start afresh, overwrite the file
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _build_blob(trt: ModuleType, logger: Any, data: bytes, proto: Any, opts: BuildOptions, targets: tuple[str, ...],
                strongly: bool, precision: str, report: Report | None,
                cancel: threading.Event) -> tuple[Any, Any, float, dict[str, TensorInfo]]:
    """(serialized engine or None, timing cache or None, seconds, network I/O). Builder, network, parser and
    config are owned by this frame and freed when it returns (TensorRT 10 deprecates their context managers for
    refcounting)."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"cannot parse the ONNX: {'; '.join(errs) or ' | '.join(logger.errors)}")
    config = builder.create_builder_config()
    profile = _configure(trt, builder, network, config, proto, opts, targets, precision == "fp16" and not strongly)
    monitor = _progress_monitor(trt, report, cancel)
    if monitor is not None:
        config.progress_monitor = monitor
    # TensorRT-RTX: the timing cache does not affect its engines and makes the build look for a GPU
    tcache = None if is_rtx(trt) else _timing_cache(config, opts.timing_cache)
    t0 = time.perf_counter()
    blob = interruptible(lambda: builder.build_serialized_network(network, config), cancel)
    if cancel.is_set():
        raise BackendError(f"engine build of {opts.profile.slug} cancelled; nothing was written")
    return blob, tcache, time.perf_counter() - t0, network_io(trt, network, profile)


def interruptible(build: Callable[[], Any], cancel: threading.Event) -> Any:
    """``build()`` in a worker thread, so Ctrl-C reaches the main thread at once: it sets ``cancel`` (the progress
    monitor then stops TensorRT at its next step), waits for the worker to unwind, and re-raises. Nothing is
    half-written: engines are written only after a build returns, and atomically."""
    box: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C can return early on the next call

    def work() -> None:
        try:
            box["value"] = build()
        except BaseException as e:  # handed to the caller's thread below
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="trt-build", daemon=True).start()
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        cancel.set()
        done.wait()
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def build_engine(onnx_path: str | Path, out: str | Path, opts: BuildOptions = BuildOptions(),
                 report: Report | None = None, cancel: threading.Event | None = None) -> BuildResult:
    """Build ``onnx_path`` into ``out`` (plus ``out``.json with its key); see :class:`BuildOptions`.
    Setting ``cancel`` (or Ctrl-C) stops the build: BackendError (KeyboardInterrupt) and no file written."""
    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.exists():
        raise UsageError(f"ONNX file {onnx_path} does not exist; make one with `vsr-export onnx`")
    trt, flavour, targets, gpu = _plan(opts)
    native_strong = is_rtx(trt) or trt_major(trt) >= 11  # no FP16 builder flag there
    # fp16 is always strongly typed (converted ONNX, integer frame I/O kept): TensorRT 10's FP16 flag would let the
    # builder fall back to fp32 layers where it likes
    data, precision, proto = _network_bytes(onnx_path, opts.precision, native_strong or opts.precision == "fp16")
    strongly = native_strong or _is_fp16(proto)  # an fp16 ONNX is built as typed on TensorRT 10 too
    key = EngineKey(file_sha256(onnx_path), opts.profile.slug, precision, flavour, trt.__version__, gpu, targets)
    logger = _make_logger(trt, report)
    blob, tcache, seconds, io = _build_blob(trt, logger, data, proto, opts, targets, strongly, precision, report,
                                        cancel or threading.Event())
    if blob is None:
        raise BackendError(f"{flavour} {trt.__version__} failed to build {onnx_path.name}: "
                           f"{' | '.join(logger.errors) or 'no error logged'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, blob)
    if tcache is not None and opts.timing_cache is not None:
        write_atomic(opts.timing_cache, tcache.serialize())
    write_sidecar(out, key, seconds, {p.key: p.value for p in proto.metadata_props if p.key.startswith("vsr.")})
    return BuildResult(out, key, seconds, out.stat().st_size, False, io)


def _is_fp16(proto: Any) -> bool:
    return {p.key: p.value for p in proto.metadata_props}.get("vsr.precision") == "fp16"


def wanted_key(onnx_path: str | Path, opts: BuildOptions) -> EngineKey:
    """The key an engine for ``onnx_path`` built with ``opts`` on this machine would have."""
    from export.onnx import load_onnx

    trt, flavour, targets, gpu = _plan(opts)
    precision = "fp16" if opts.precision == "fp16" or _is_fp16(load_onnx(onnx_path)) else "fp32"
    return EngineKey(file_sha256(onnx_path), opts.profile.slug, precision, flavour, trt.__version__, gpu, targets)


def ensure_engine(onnx_path: str | Path, opts: BuildOptions = BuildOptions(), cache_dir: Path | None = None,
                  report: Report | None = None, cancel: threading.Event | None = None) -> BuildResult:
    """The cached engine for (ONNX, opts, this TensorRT, this GPU), rebuilt when missing, stale or foreign."""
    onnx_path = Path(onnx_path)
    key = wanted_key(onnx_path, opts)
    path = (cache_dir or default_cache_dir()) / key.filename(onnx_path.stem)
    if path.exists():
        try:
            reason = mismatch(read_key(path), key)
        except BackendError as e:
            reason = str(e)
        if reason is None:
            return BuildResult(path, key, 0.0, path.stat().st_size, True)
        if report:
            report(f"stale engine {path.name}: {reason}; rebuilding")
    if report:
        report(f"building {path.name} ({opts.precision}, profile {opts.profile.slug}); cached for later runs")
    return build_engine(onnx_path, path, opts, report, cancel)


def engine_for(onnx_path: Path, profile: Profile, precision: str, flavour: str, cache_dir: Path | None,
               report: Report | None = None) -> Path:
    """The engine builder the TensorRT backend is handed (entry point ``vsr_upscale.engine_builders:tensorrt``):
    the cached engine for this ONNX and profile, built when missing (progress to ``report``; Ctrl-C stops it)."""
    opts = BuildOptions(profile=profile, precision=precision, flavour=flavour)
    return ensure_engine(onnx_path, opts, cache_dir, report).path
