"""Make samples/dog_320x180.mp4: 2.5 s of SAM 2's 01_dog.mp4 at 320x180, H.264 + a synthesized soft AAC tone.

Run from the repository root:  python samples/make_sample.py [SOURCE] [OUTPUT]
Needs only PyAV and numpy (the engine's own dependencies).
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SOURCE = Path("/work/shared/data/train/video/sam2_01_dog.mp4")  # facebookresearch/sam2 demo/data/gallery/01_dog.mp4
OUTPUT = Path(__file__).resolve().parent / "dog_320x180.mp4"
START_S, LENGTH_S = 1.0, 2.5  # cut, in seconds of the source
SIZE = (320, 180)  # output width, height
RATE = 48000  # audio sample rate (Hz)


def tone(seconds: float) -> np.ndarray:
    """A soft A3+E4 chord with 0.3 s fades: float32 (1, n) in [-0.1, 0.1]."""
    t = np.arange(int(seconds * RATE), dtype=np.float64) / RATE
    wave = 0.06 * np.sin(2 * np.pi * 220 * t) + 0.04 * np.sin(2 * np.pi * 330 * t)
    fade = np.clip(np.minimum(t, seconds - t) / 0.3, 0, 1)
    return (wave * fade).astype(np.float32)[None]


def main(src: Path = SOURCE, dst: Path = OUTPUT) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        tb, rate = vin.time_base, vin.average_rate
        v = out.add_stream("libx264", rate=rate, options={"crf": "20", "preset": "slow"})
        v.width, v.height, v.pix_fmt = *SIZE, "yuv420p"
        v.codec_context.time_base = tb
        for k in ("colorspace", "color_range", "color_primaries", "color_trc"):
            setattr(v.codec_context, k, 1)  # the source is BT.709, limited range
        a = out.add_stream("aac", rate=RATE, layout="mono", options={"b": "48k"})
        first = None
        for f in inp.decode(vin):
            t = f.pts * tb
            if t < START_S:
                continue
            if t >= START_S + LENGTH_S:
                break
            first = t if first is None else first
            small = f.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p", interpolation="AREA")
            small.pts, small.time_base = round((t - first) / tb), tb  # start at 0
            for p in v.encode(small):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        samples = tone(LENGTH_S)
        for start in range(0, samples.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp",
                                            layout="mono")
            af.sample_rate, af.pts, af.time_base = RATE, start, Fraction(1, RATE)
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    print(f"wrote {dst} ({dst.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:3]))
