"""The one contract of an exported step graph: tensor names, dtypes, layouts, ``vsr.*`` metadata, zero state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError

FORMAT = "2"  # vsr.format: 2 = integer frame planes (video) / named G-buffers (renderer); files without it are older
VIDEO, GBUFFER = "video", "gbuffer"  # the two kinds of step graph
SCALES = (2, 3, 4)  # output/input size ratios a graph may declare
MAX_HIDDEN_CHANNELS = 1024  # sanity bound on a declared hidden tensor (real models: <= 64)

# Video graphs: per-frame inputs in graph order, name -> meaning. Planes are (1, C, rows, columns), integer samples.
VIDEO_INPUTS: dict[str, str] = {
    "y": "(1, 1, H, W) luma plane (G for RGB frames), uint8 or uint16 samples as decoded",
    "uv": "(1, 2, Hc, Wc) chroma planes U, V (B, R for RGB); Hc = H (4:4:4) or ceil(H / 2) (4:2:0), Wc likewise",
    "to_rgb": "(3, 4) float32: rgb in [0, 1] = to_rgb[:, :3] @ (y, u, v) + to_rgb[:, 3], samples as code values",
    "from_rgb": "(3, 4) float32: output code values (y, u, v) = from_rgb[:, :3] @ clip(rgb, 0, 1) + from_rgb[:, 3]",
    "peak": "(1,) float32: largest output code value (255, 1023, 4095, 65535); samples are rounded, then clipped",
}
# Video graphs whose vsr.motion is "1" (a history blend aligned to the motion) take one more per-frame input, last.
MOTION_UNIT = 64  # motion samples per LR pixel
VIDEO_MOTION: dict[str, str] = {
    "motion": "(1, 2, H, W) int32: where each LR pixel was in the previous frame, relative to where it is, in "
              "1/64 pixel, x right then y down (engine/flow.py); zeros on the first frame and after a reset",
}
# Video graphs: per-frame outputs; the chroma subsampling of the output is the input's, at scale x the size.
VIDEO_OUTPUTS: dict[str, str] = {
    "y_out": "(1, 1, sH, sW) luma plane, the frame dtype",
    "uv_out": "(1, 2, sHc, sWc) chroma planes, the frame dtype, subsampled like the input",
}
# G-buffer graphs: per-frame inputs in graph order, name -> meaning. Shapes (1, C, H, W) except jitter (1, 2).
GBUFFER_INPUTS: dict[str, str] = {
    "lr": "(1, 3, H, W) colour in [0, 1], display-referred, jittered render",
    "depth": "(1, 1, H, W) device depth in [0, 1], 0 = near plane (convert inverted depth first)",
    "motion": "(1, 2, H, W) current -> previous position in render pixels, x right, y down, without jitter",
    "normals": "(1, 3, H, W) view-space unit normals, x right, y up, z towards the camera",
    "albedo": "(1, 3, H, W) unlit surface colour in [0, 1]",
    "jitter": "(1, 2) projection offset of this frame in render pixels, x right, y down (FSR2 sign)",
}
GBUFFER_OUTPUTS: dict[str, str] = {"sr": "(1, 3, sH, sW) colour, not clipped"}
FRAME_DTYPES = ("uint8", "uint16", "float32", "float16")  # vsr.frame_dtype values (floats: G-buffer colour only)
STATE_DTYPES = ("float32", "float16")  # vsr.state_dtype values


def hidden_names(n: int) -> tuple[list[str], list[str]]:
    """Names of the ``n`` hidden-state inputs and outputs: ``hidden_in{i}`` / ``hidden_out{i}``."""
    return [f"hidden_in{i}" for i in range(n)], [f"hidden_out{i}" for i in range(n)]


@dataclass(frozen=True)
class GraphSpec:
    """Everything a backend, exporter or benchmark needs to know about one step graph."""

    kind: str  # VIDEO (integer planes in and out) or GBUFFER (renderer colour + G-buffers)
    model: str  # model name recorded with the weights ("rvsr-s", "rdg-s", ...)
    scale: int  # output/input size ratio
    hidden: tuple[tuple[int, int], ...]  # per hidden tensor: (channels, spatial factor vs the LR frame)
    frame_dtype: str = "uint8"  # dtype of the frame planes (video) or of the colour input (G-buffer)
    state_dtype: str = "float32"  # dtype of every hidden tensor
    weights: str = ""  # file the backend loaded (ONNX, engine or safetensors)
    motion: bool = False  # video graphs: takes the ``motion`` input (VIDEO_MOTION) after the planes and constants

    @property
    def frame_inputs(self) -> list[str]:
        """Per-frame input names, in graph order."""
        if self.kind != VIDEO:
            return list(GBUFFER_INPUTS)
        return [*VIDEO_INPUTS, *(VIDEO_MOTION if self.motion else ())]

    @property
    def frame_outputs(self) -> list[str]:
        """Per-frame output names, in graph order."""
        return list(VIDEO_OUTPUTS if self.kind == VIDEO else GBUFFER_OUTPUTS)

    @property
    def inputs(self) -> list[str]:
        """Every input name: frame inputs, then ``hidden_in*``."""
        return self.frame_inputs + hidden_names(len(self.hidden))[0]

    @property
    def outputs(self) -> list[str]:
        """Every output name: frame outputs, then ``hidden_out*``."""
        return self.frame_outputs + hidden_names(len(self.hidden))[1]

    def hidden_shapes(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """NCHW shape of each hidden tensor for an LR frame of ``h`` x ``w``."""
        return [(1, c, h * f, w * f) for c, f in self.hidden]

    def zero_state(self, h: int, w: int) -> dict[str, np.ndarray]:
        """Host zero state for an ``h`` x ``w`` frame, keyed ``hidden_in*`` (first frame, after a cut)."""
        names = hidden_names(len(self.hidden))[0]
        return {n: np.zeros(s, self.state_dtype) for n, s in zip(names, self.hidden_shapes(h, w))}

    def next_state(self, outputs: Mapping[str, object]) -> dict[str, object]:
        """The ``hidden_in*`` feeds of the next step from this step's ``hidden_out*`` outputs."""
        ins, outs = hidden_names(len(self.hidden))
        return {i: outputs[o] for i, o in zip(ins, outs)}

    def metadata(self) -> dict[str, str]:
        """The ``vsr.*`` metadata an exporter writes (weights hash and precision are added by the exporter)."""
        return {"vsr.format": FORMAT, "vsr.kind": self.kind, "vsr.model": self.model, "vsr.scale": str(self.scale),
                "vsr.hidden": json.dumps([list(s) for s in self.hidden]), "vsr.frame_dtype": self.frame_dtype,
                "vsr.state_dtype": self.state_dtype, "vsr.motion": str(int(self.motion))}


def check_scale(value: object, where: str) -> int:
    """``value`` (metadata text or int) as a scale in SCALES; ModelError naming ``where`` otherwise."""
    try:
        scale = int(str(value))
    except ValueError:
        scale = 0
    if scale not in SCALES:
        raise ModelError(f"{where}: metadata scale is {value!r}; expected one of {', '.join(map(str, SCALES))} "
                         "(the file is damaged or was not written by vsr-export / vsr-train)")
    return scale


def _hidden(text: str, where: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple((int(c), int(f)) for c, f in json.loads(text))
    except (ValueError, TypeError):
        raise ModelError(f"{where}: vsr.hidden {text[:60]!r} is not a JSON list of [channels, factor]") from None
    for c, f in pairs:
        if not (0 < c <= MAX_HIDDEN_CHANNELS and 0 < f <= max(SCALES)):
            raise ModelError(f"{where}: vsr.hidden declares a ({c} channels, x{f}) state tensor; expected 1-"
                             f"{MAX_HIDDEN_CHANNELS} channels at x1-x{max(SCALES)} (damaged metadata)")
    return pairs


def spec_from_metadata(meta: Mapping[str, str], path: str | Path) -> GraphSpec:
    """GraphSpec from a graph's ``vsr.*`` metadata; ModelError for missing, older or malformed metadata."""
    where = Path(path).name
    if "vsr.scale" not in meta or "vsr.hidden" not in meta:
        raise ModelError(f"{where} is not a vsr-upscale model (no vsr.scale/vsr.hidden metadata); "
                         "export one with `vsr-export onnx`")
    if meta.get("vsr.format") != FORMAT:
        raise ModelError(f"{where} was exported by an older vsr-export (float RGB frames); re-export it from its "
                         "safetensors: vsr-export onnx --scale S --weights W.safetensors --out OUT.onnx")
    kind, fdt, sdt = meta.get("vsr.kind"), meta.get("vsr.frame_dtype"), meta.get("vsr.state_dtype")
    if kind not in (VIDEO, GBUFFER) or fdt not in FRAME_DTYPES or sdt not in STATE_DTYPES:
        raise ModelError(f"{where}: bad vsr.kind/frame_dtype/state_dtype ({kind!r}, {fdt!r}, {sdt!r})")
    motion = meta.get("vsr.motion", "0")
    if motion not in ("0", "1") or (motion == "1" and kind != VIDEO):
        raise ModelError(f"{where}: bad vsr.motion {motion!r} (a video graph's flag, 0 or 1)")
    return GraphSpec(kind=kind, model=meta.get("vsr.model", "unknown"), scale=check_scale(meta["vsr.scale"], where),
                     hidden=_hidden(meta["vsr.hidden"], where), frame_dtype=fdt, state_dtype=sdt, weights=str(path),
                     motion=motion == "1")


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as a runtime declares it."""

    dtype: str  # numpy dtype name ("uint8", "float32", ...)
    shape: tuple[int | str, ...]  # fixed dims as ints, symbolic ones as names


def check_io(spec: GraphSpec, inputs: Mapping[str, Tensor], outputs: Mapping[str, Tensor]) -> None:
    """Validate the metadata against the graph's declared I/O: names, dtypes and hidden channel counts."""
    where = Path(spec.weights).name
    if set(inputs) != set(spec.inputs) or not set(spec.outputs) <= set(outputs):
        raise ModelError(f"{where}: graph inputs {sorted(inputs)} / outputs {sorted(outputs)} do not match its "
                         f"vsr.* metadata ({spec.kind}, {len(spec.hidden)} hidden tensors); re-export it")
    frame = spec.frame_inputs[0]
    if inputs[frame].dtype != spec.frame_dtype:
        raise ModelError(f"{where}: input {frame} is {inputs[frame].dtype} but vsr.frame_dtype says {spec.frame_dtype}")
    if spec.motion and inputs["motion"].dtype != "int32":
        raise ModelError(f"{where}: input motion is {inputs['motion'].dtype}; the contract says int32 (re-export it)")
    ins, outs = hidden_names(len(spec.hidden))
    for (c, _), i, o in zip(spec.hidden, ins, outs):
        for t, name in ((inputs[i], i), (outputs[o], o)):
            ch = t.shape[1] if len(t.shape) == 4 else None
            if t.dtype != spec.state_dtype or ch is None or (isinstance(ch, int) and ch != c):
                raise ModelError(f"{where}: {name} is {t.dtype} {list(t.shape)} but vsr.hidden/state_dtype declare "
                                 f"{spec.state_dtype} with {c} channels (damaged metadata); re-export it")


def check_probe(spec: GraphSpec, h: int, w: int, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Validate scale and hidden layout against the output shapes of one real run on an ``h`` x ``w`` frame."""
    where, s = Path(spec.weights).name, spec.scale
    main = "y_out" if spec.kind == VIDEO else "sr"
    if tuple(shapes[main][-2:]) != (h * s, w * s):
        got = shapes[main][-2] / h
        raise ModelError(f"{where}: vsr.scale says x{s} but the graph upscales x{got:g}; its metadata is wrong")
    want = spec.hidden_shapes(h, w)
    for name, shape in zip(hidden_names(len(want))[1], want):
        if tuple(shapes[name]) != shape:
            raise ModelError(f"{where}: {name} is {list(shapes[name])} but vsr.hidden declares {list(shape)}")
