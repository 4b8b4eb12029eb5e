"""Render a scene at low resolution, upscale every frame through RenderUpscaler, write bicubic | model side by side.

    python examples/render_demo.py --out demo.mp4 [--scale 2] [--weights runs/render/rdg-s-x2/weights.safetensors]

The scene comes from the held-out (test) textures. Halfway through, the demo cuts to a second scene and passes
reset=True, as a game does on a camera cut. Per-frame latency of upscale() (not of rendering) is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("render_demo.mp4"), help="mp4 to write")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--model", default="rdg-s")
    p.add_argument("--weights", help="safetensors or onnx (default: the shipped weights)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch", "tensorrt"))
    p.add_argument("--width", type=int, default=256, help="render width")
    p.add_argument("--height", type=int, default=144, help="render height")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--seed", type=int, default=3, help="test-scene seed (textures held out from training)")
    p.add_argument("--textures", default=str(ROOT.parent / "shared" / "data" / "train"), help="folder holding images/")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p.parse_args(argv)


def bicubic(color: np.ndarray, scale: int) -> np.ndarray:
    import cv2

    h, w = color.shape[:2]
    return cv2.resize(color, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    img = img.copy()
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import av
    import torch

    from engine import RenderUpscaler
    from engine.errors import VsrError
    from engine.render_api import halton_jitter, jitter_phase_count
    from training.render.dataset import TEST_SEED_BASE
    from training.render.gbuffer import Renderer, texture_pool
    from training.render.scene import make_scene

    if args.threads:
        torch.set_num_threads(args.threads)
    pool = texture_pool(args.textures, "test")
    scenes = [make_scene(TEST_SEED_BASE + args.seed, pool), make_scene(TEST_SEED_BASE + args.seed + 1, pool)]
    phases = jitter_phase_count(args.width, args.width * args.scale)
    size = (args.height, args.width)
    try:
        up = RenderUpscaler(args.scale, model=args.model, backend=args.backend, weights=args.weights)
    except VsrError as e:
        print(f"render_demo: {e}", file=sys.stderr)
        return 2
    latencies = []
    with up, Renderer() as renderer, av.open(str(args.out), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = 2 * args.width * args.scale, args.height * args.scale
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "16"}
        for i in range(args.frames):
            cut = i == args.frames // 2
            scene, t = scenes[int(i >= args.frames // 2)], i % (args.frames // 2)
            g = renderer.gbuffer(scene, t, size, halton_jitter(i, phases))
            color = np.clip(np.round(g.color * 255), 0, 255).astype(np.uint8)  # an 8-bit render target
            t0 = time.perf_counter()
            sr = up.upscale(color, g.depth, g.motion, g.normals, g.albedo, jitter=g.jitter, reset=(i == 0 or cut))
            latencies.append((time.perf_counter() - t0) * 1e3)
            print(f"frame {i:3d}: {latencies[-1]:7.1f} ms" + ("  (camera cut: reset)" if cut else ""))
            side = np.concatenate([label(bicubic(color, args.scale), "bicubic"), label(sr, f"{args.model} x{args.scale}")], 1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(side, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    warm = latencies[1:] or latencies
    print(f"wrote {args.out}: {args.frames} frames {args.width}x{args.height} -> x{args.scale} ({args.backend}); "
          f"upscale latency mean {np.mean(warm):.1f} ms, p95 {np.percentile(warm, 95):.1f} ms (first frame excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
