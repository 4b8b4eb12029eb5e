"""RVSR: a small online recurrent video super-resolution network (RLSP-style feedback)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.motion import block_match, offsets_kernel, resize_motion, warp

ALIGN_TEMPERATURE = 1e-4  # initial softmax temperature of block matching (squared luma differences)


@dataclass(frozen=True)
class RVSRConfig:
    """Shape of one RVSR model."""

    scale: int = 2  # output/input size ratio (2, 3 or 4)
    channels: int = 32  # feature width of the body convolutions
    blocks: int = 3  # 3x3 conv+ReLU layers in the body after the input conv
    hidden: int = 16  # channels of the recurrent feature state carried at LR size
    slope: float = 0.0  # negative slope of the activations (0 = ReLU; >0 = LeakyReLU, cannot die)
    align: int = 0  # search radius (LR pixels) of the state's block-matching alignment; 0 = none
    blend: float = 0.0  # most weight of the previous output in this one where the two agree (0 = no history blend)
    blend_levels: float = 3.0  # agreement scale in 8-bit levels (see RVSR.blend_history)
    # Given the step's ``motion`` (the engine's estimate, engine/flow.py), the history moved along it competes with
    # the still one and these replace blend/blend_levels; training gives no motion, so it runs the still blend.
    motion_blend: float = 0.0  # the blend's strength with motion (0 = the model takes no motion input)
    motion_levels: float = 6.0  # its agreement scale with motion, in 8-bit levels
    # Kaiming-normal body weights and zero biases. For deep bodies: torch's default conv init shrinks the signal about
    # 3x a layer, and a 15-convolution body trained from it stalled at bicubic + 0.1 dB with its last layer 99 % off.
    he_init: bool = False


def _cubic(d: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.75, as torch's bicubic interpolate)."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def bicubic_up_kernel(scale: int) -> torch.Tensor:
    """(3*s*s, 1, 5, 5) grouped-conv weights: replicate-pad by 2, convolve, pixel-shuffle ==
    ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)``.

    Cheaper than a Resize node in onnxruntime and TensorRT, and exact (torch clamps at borders).
    """
    taps = torch.arange(-2, 3, dtype=torch.float64)
    phases = [_cubic((p + 0.5) / scale - 0.5 - taps) for p in range(scale)]  # weight of tap k for phase p
    k2 = torch.stack([torch.outer(phases[dy], phases[dx]) for dy in range(scale) for dx in range(scale)])
    return k2.repeat(3, 1, 1)[:, None].float()


class RVSR(nn.Module):
    """Online recurrent SR step: (lr, hidden) -> (sr, hidden).

    The hidden state is explicit: ``(feat, prev_sr)`` where ``feat`` is ``hidden`` channels at
    input size and ``prev_sr`` is the previous output frame (fed back pixel-unshuffled, as in RLSP).
    With ``align`` > 0 the state also keeps the previous LR frame: block matching of previous against
    current LR (engine/models/motion.py) gives a motion field that warps ``feat``, ``prev_sr`` and the
    previous LR onto the current frame, and the warped previous LR is an extra input (its mismatch with
    the current frame shows the network where the alignment failed).
    With ``blend`` > 0 the state also keeps the previous *output* and the step blends it into the new one where
    the two agree (``blend_history``): codec noise that changes from frame to frame where nothing moves is averaged
    out, moving content (where they differ) passes unchanged. With ``motion_blend`` the step takes a motion field
    (engine/flow.py in the engine; None = no motion, the still blend) and the history moved along it competes with
    the still one: per pixel the blend uses whichever agrees better, so moving content is averaged along its path.
    Frame 0 starts from zeros. Only conv, ReLU, pixel (un)shuffle, bicubic resize and (aligned)
    pad/slice/average-pool/softmax/grid_sample are used, so the graph exports to ONNX (opset 17) and
    TensorRT.
    """

    def __init__(self, cfg: RVSRConfig) -> None:
        super().__init__()
        if cfg.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {cfg.scale}")
        if cfg.motion_blend and not cfg.blend:
            raise ValueError("motion_blend needs blend > 0: the history it moves is the blend's")
        self.cfg = cfg
        s2 = cfg.scale * cfg.scale
        c_in = 3 + 3 * s2 + cfg.hidden + (3 if cfg.align else 0)
        def act() -> nn.Module:
            return nn.LeakyReLU(cfg.slope, inplace=True) if cfg.slope > 0 else nn.ReLU(inplace=True)

        layers: list[nn.Module] = [nn.Conv2d(c_in, cfg.channels, 3, padding=1), act()]
        for _ in range(cfg.blocks):
            layers += [nn.Conv2d(cfg.channels, cfg.channels, 3, padding=1), act()]
        self.body = nn.Sequential(*layers)
        if cfg.he_init:
            for conv in self.body[::2]:
                nn.init.kaiming_normal_(conv.weight, a=cfg.slope, nonlinearity="leaky_relu")
                nn.init.zeros_(conv.bias)
        self.to_sr = nn.Conv2d(cfg.channels, 3 * s2, 3, padding=1)
        self.to_hidden = nn.Conv2d(cfg.channels, cfg.hidden, 3, padding=1)
        # Start as "bicubic + small residual" so early training is stable.
        self.register_buffer("up_kernel", bicubic_up_kernel(cfg.scale), persistent=False)
        nn.init.zeros_(self.to_sr.bias)
        self.to_sr.weight.data.mul_(0.1)
        if cfg.align:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(ALIGN_TEMPERATURE)))
            # follows .to(device/dtype) with the model, so no per-frame host -> device copy
            self.register_buffer("align_offsets", offsets_kernel(cfg.align), persistent=False)

    def hidden_spec(self) -> list[tuple[int, int]]:
        """(channels, spatial factor vs the LR frame) of each hidden tensor, in order."""
        spec = [(self.cfg.hidden, 1), (3, self.cfg.scale)]
        return spec + [(3, 1)] * bool(self.cfg.align) + [(3, self.cfg.scale)] * bool(self.cfg.blend)

    @staticmethod
    def disagreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) 3x3 mean of the channel-mean absolute difference of two RGB images in [0, 1]."""
        return F.avg_pool2d((a - b).abs().mean(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=False)

    def blend_history(self, sr: torch.Tensor, history: torch.Tensor,
                      moved: torch.Tensor | None = None) -> torch.Tensor:
        """``sr`` moved towards the previous output by ``blend * exp(-(d / blend_levels)^2)``, d the 3x3 mean of their
        channel-mean absolute difference in 8-bit levels: a temporal filter that stops where the history disagrees
        (as a renderer's temporal accumulation with its history rejection). ``moved`` is the history laid onto this
        frame by the motion: where it agrees better than the still history, it is the one blended in, and the
        strength and scale are ``motion_blend`` and ``motion_levels``."""
        strength, levels = self.cfg.blend, self.cfg.blend_levels
        d = self.disagreement(history, sr)
        if moved is not None:
            strength, levels = self.cfg.motion_blend, self.cfg.motion_levels
            d_moved = self.disagreement(moved, sr)
            history = torch.where(d_moved < d, moved, history)
            d = torch.minimum(d, d_moved)
        weight = strength * torch.exp(-torch.square(d * (255.0 / levels)))
        return sr + weight * (history - sr)

    def init_hidden(self, lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero state for a batch shaped like ``lr`` (N, 3, H, W)."""
        n, _, h, w = lr.shape
        return tuple(lr.new_zeros(n, c, h * f, w * f) for c, f in self.hidden_spec())

    def step(
        self, lr: torch.Tensor, hidden: tuple[torch.Tensor, ...] | None = None, motion: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame: RGB in [0, 1], shape (N, 3, H, W) -> (N, 3, sH, sW) and the new state. ``motion`` (N, 2, H, W),
        current -> previous in LR pixels, aligns the history blend of ``motion_blend`` models (ignored otherwise)."""
        if hidden is None:
            hidden = self.init_hidden(lr)
        feat, prev_sr = hidden[:2]
        s = self.cfg.scale
        extra = []
        if self.cfg.align:
            motion = block_match(lr, hidden[2], self.cfg.align, self.log_temperature.exp(),
                                 offsets=self.align_offsets)
            feat = warp(feat, motion)
            prev_sr = warp(prev_sr, resize_motion(motion, prev_sr, float(s)))
            extra = [warp(hidden[2], motion)]
        x = torch.cat([lr, F.pixel_unshuffle(prev_sr, s), feat, *extra], dim=1)
        y = self.body(x)
        base = F.pixel_shuffle(F.conv2d(F.pad(lr, (2, 2, 2, 2), mode="replicate"), self.up_kernel, groups=3), s)
        sr = base + F.pixel_shuffle(self.to_sr(y), s)
        new_hidden = (torch.relu(self.to_hidden(y)), sr, *([lr] if self.cfg.align else []))
        if self.cfg.blend:
            history, moved = hidden[-1], None
            if self.cfg.motion_blend and motion is not None:
                # in fp32 whatever the model runs in: an fp16 grid is off by up to a pixel at 4K widths
                grid_motion = resize_motion(motion.float(), history, float(s))
                moved = warp(history.float(), grid_motion).to(history.dtype)
            sr = self.blend_history(sr, history, moved)
            new_hidden += (sr,)
        return sr, new_hidden

    def forward(self, lr: torch.Tensor, *hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Flat signature for export: (lr, hidden_in0, ...) -> (sr, hidden_out0, ...), one per hidden_spec entry."""
        sr, new_hidden = self.step(lr, tuple(hidden) if hidden else None)
        return (sr, *new_hidden)

    def unroll(self, frames: torch.Tensor, hidden: list[torch.Tensor] | None = None,
               return_state: bool = False):
        """Run a whole clip (N, T, 3, H, W) from ``hidden`` (None: a zero state); returns (N, T, 3, sH, sW), and
        the final state too when ``return_state``."""
        outs = []
        for t in range(frames.shape[1]):
            sr, hidden = self.step(frames[:, t], hidden)
            outs.append(sr)
        out = torch.stack(outs, dim=1)
        return (out, hidden) if return_state else out
