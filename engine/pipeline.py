"""Ties the stages together: decode+preprocess, step, postprocess+encode overlap in threads with bounded queues."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from engine import colour
from engine.backends.base import Backend
from engine.backends.select import ModelChoice, open_backend
from engine.decode import FrameItem, Source, VideoInfo, Window
from engine.device_frames import DEVICE_BACKENDS, DevicePlanes, download
from engine.encode import EncodeOptions, Sink, choose_pix_fmt, output_format, resolve_codec
from engine.errors import ModelError
from engine.flow import MotionEstimator
from engine.graph import VIDEO
from engine.hwvideo import plan_run
from engine.input_model import input_choice, model_note
from engine.memory import check as check_memory
from engine.postprocess import OutputFormat, Postprocessor
from engine.preprocess import FULL, Preprocessor, SceneCutDetector, SceneCutOptions, layout_of, matrix_of, range_of
from engine.retime import Retimer
from engine.step import Stepper

STAGES = ("decode", "preprocess", "step", "postprocess", "encode")  # keys of Summary.stage_s, in data-path order
_END = ("end",)  # queue sentinel


@dataclass(frozen=True)
class PipelineOptions:
    """One upscaling job."""

    input: Path  # source video
    output: Path  # destination; written to a temp file beside it, renamed when complete
    model: ModelChoice = ModelChoice()  # which weights
    backend: str = "auto"  # auto | onnxruntime | torch | tensorrt
    encode: EncodeOptions = EncodeOptions()  # codec, quality, timing, stream copies
    scene: SceneCutOptions = SceneCutOptions()  # scene-cut detector (threshold 0 disables it)
    queue_size: int = 4  # frames in flight between two stages; bounds memory at big sizes
    max_memory: float | None = None  # GiB the run may use (engine.memory); None = the free memory, 0 = no check
    window: Window | None = None  # one segment only: seek, warm-up frames stepped but not encoded, kept range
    hwaccel: str = "auto"  # hardware video (engine/hwvideo.py): auto = NVDEC/NVENC where they open, none, cuda


@dataclass
class Summary:
    """What a run did; printed as one line, or as JSON with --json."""

    input: str  # source path
    output: str  # written path
    frames_in: int = 0  # video frames decoded
    frames_out: int = 0  # video frames encoded (differs from frames_in only with --fps)
    corrupt: int = 0  # corrupt packets skipped / frames concealed by the decoder
    truncated: bool = False  # the input ended with a read error; what was decoded was kept
    resets: int = 0  # hidden-state resets (scene cuts + size changes), not counting the start
    reset_frames: list[int] = field(default_factory=list)  # frame indices of those resets
    size_in: tuple[int, int] = (0, 0)  # input width, height
    size_out: tuple[int, int] = (0, 0)  # output width, height
    scale: int = 0  # output/input size ratio
    model: str = ""  # model name from the weights
    weights: str = ""  # weights file
    backend: str = ""  # backend that ran, e.g. "onnxruntime-cpu"
    backend_notes: list[str] = field(default_factory=list)  # why that backend was chosen
    codec: str = ""  # video encoder
    decoder: str = ""  # video decoder: "nvdec" (CUDA hwaccel) or "cpu"
    video_notes: list[str] = field(default_factory=list)  # why that decoder and that encoder
    video_gpu: bool = False  # a CUDA device opened for video: the video notes are printed on stderr too
    pix_fmt: str = ""  # encoded pixel format
    copied_streams: int = 0  # audio/subtitle streams copied packet for packet
    copied_packets: int = 0  # packets of those streams written
    notes: list[str] = field(default_factory=list)  # adaptations (dropped streams, ignored options)
    wall_s: float = 0.0  # seconds from opening the input to the renamed output
    fps: float = 0.0  # frames_in / wall_s
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))  # busy seconds per stage
    # CPU seconds of the stage's own thread (time.thread_time); below stage_s when the machine is busy or when the
    # work runs in library threads (onnxruntime intra-op pool, x264 threads, frame-threaded decoding)
    stage_cpu_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


Progress = Callable[[int, int], None]  # (frames done, frames expected or 0)


class _Clock:
    """Adds wall and own-thread CPU time of a block to one stage; each stage is timed by one thread only."""

    def __init__(self, summary: Summary) -> None:
        self.wall, self.cpu = summary.stage_s, summary.stage_cpu_s

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def stop(self, stage: str, t: tuple[float, float]) -> None:
        self.wall[stage] += time.perf_counter() - t[0]
        self.cpu[stage] += time.thread_time() - t[1]


class _Lane:
    """A bounded queue whose put/get give up when the job is stopping."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while not self.stop.is_set():
            try:
                item = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, tuple) and item[0] == "error":
                raise item[1]
            yield item


def _worker(name: str, body: Callable[[], None], out: _Lane) -> threading.Thread:
    def run() -> None:
        try:
            body()
            out.put(_END)
        except BaseException as e:  # forwarded to the main thread, which raises it
            out.put(("error", e))

    return threading.Thread(target=run, name=f"vsr-{name}", daemon=True)


class _Job:
    """One run's moving parts; the three stage bodies share only the lanes and their own timers."""

    def __init__(self, opts: PipelineOptions, src: Source, backend: Backend, sink: Sink, fmt: OutputFormat,
                 summary: Summary, progress: Progress | None, device_frames: bool = False) -> None:
        self.opts, self.src, self.sink, self.summary, self.progress = opts, src, sink, summary, progress
        out_sub = fmt.sub if not layout_of(fmt.pix_fmt)[0] else (1, 1)
        frame_dtype = backend.io_spec().frame_dtype
        self.pre = Preprocessor(src.info, frame_dtype, out_sub)
        self.post = Postprocessor(fmt, self.pre.sub)
        constants = colour_constants(src.info, self.pre.bits, fmt)
        self.device: DevicePlanes | None = None  # NVDEC frames read on the GPU, for backends that take CUDA tensors
        if device_frames and backend.name in DEVICE_BACKENDS and self.pre.sub == (2, 2):
            full = range_of(src.info) == FULL
            self.device = DevicePlanes((src.info.width, src.info.height), frame_dtype, opts.scene.thumb, full)
            summary.video_notes.append(f"NVDEC frames reach {backend.name} on the GPU (DLPack, no host copy)")
            constants = self.device.upload(constants)
        self.stepper = Stepper(backend, constants, self.pre.bits)
        # the motion input is estimated here, on the decode thread, so it overlaps the step (Stepper would too)
        self.motion = MotionEstimator(self.pre.bits) if self.stepper.spec.motion else None
        self.clock = _Clock(summary)
        self.stop = threading.Event()
        self.lanes = (_Lane(opts.queue_size, self.stop), _Lane(opts.queue_size, self.stop))

    def decode_body(self) -> None:
        pre, cuts = self.pre, SceneCutDetector(self.opts.scene)
        last_size = (self.src.info.width, self.src.info.height)
        items = self.src.items()
        first = True
        while True:
            t = self.clock.start()
            item = next(items, None)
            self.clock.stop("decode", t)
            if item is None:
                return
            if not isinstance(item, FrameItem):
                if not self.lanes[0].put(("packet", item.packet)):
                    return
                continue
            t = self.clock.start()
            size = (item.frame.width, item.frame.height)
            reset = size != last_size  # mid-stream resolution change: new content, fresh state
            last_size = size
            if reset:
                cuts.restart()
            if self.device is not None:
                planes = self.device(item.frame)
                reset = cuts.judge(self.device.thumbnail(planes["y"])) or reset
            else:
                item.frame = download(item.frame)  # an NVDEC frame for a host backend: one copy to the host
                reset = cuts.is_cut(item.frame) or reset
                planes = pre(item.frame)
            item.frame = None  # drop the decoded picture early; only the array travels on
            if self.motion is not None:  # fresh where the stepper's state will be: the first frame and every reset
                planes["motion"] = self.motion(planes["y"], fresh=first or reset)
            first = False
            self.clock.stop("preprocess", t)
            if not self.lanes[0].put(("frame", item, planes, reset)):
                return

    def step_body(self) -> None:
        """Submits each frame's step and passes results on in order; a backend with frames in flight (TensorRT)
        gets up to that many submitted steps before the oldest is collected, so copies and compute overlap."""
        depth = max(1, self.stepper.backend.frames_in_flight)
        pending: deque[tuple] = deque()  # ("ticket", item, ticket) or a message passed through as it is
        in_flight = 0
        for msg in self.lanes[0]:
            if msg[0] == "frame":
                _, item, planes, reset = msg
                t = self.clock.start()
                pending.append(("ticket", item, self.stepper.submit(planes, reset)))
                self.clock.stop("step", t)
                in_flight += 1
            else:
                pending.append(msg)
            while pending and (pending[0][0] != "ticket" or in_flight >= depth):
                if pending[0][0] == "ticket":
                    in_flight -= 1
                if not self._pass_on(pending.popleft()):
                    return
        while pending:
            if not self._pass_on(pending.popleft()):
                return

    def _pass_on(self, msg: tuple) -> bool:
        if msg[0] == "ticket":
            t = self.clock.start()
            out = self.stepper.collect(msg[2])
            self.clock.stop("step", t)
            msg = ("frame", msg[1], out)
        return self.lanes[1].put(msg)

    def encode_loop(self) -> None:
        """Runs on the calling thread so Ctrl-C lands here."""
        info, s = self.src.info, self.summary
        retimer = Retimer(info.time_base, info.start_pts, self.sink.rate_override, self.sink.time_base)
        end_pts = info.start_pts
        for msg in self.lanes[1]:
            if msg[0] == "packet":
                self.sink.mux(msg[1])
                s.copied_packets += 1
                continue
            _, item, out = msg
            if item.warmup:
                continue  # warm-up frame: its step only primed the state
            t = self.clock.start()
            frame = self.post(out)
            self.clock.stop("postprocess", t)
            self._encode(retimer.push(frame, item.pts))
            end_pts = max(end_pts, item.pts + item.duration)
            s.frames_in += 1
            if self.progress:
                self.progress(s.frames_in, info.frames)
        self._encode(retimer.flush(end_pts))

    def _encode(self, pairs: Iterator[tuple[Any, int]]) -> None:
        t = self.clock.start()
        for frame, pts in pairs:
            frame.pts = pts  # source pts, or the --fps slot in 1/F
            frame.time_base = self.sink.time_base
            self.sink.encode(frame)
            self.summary.frames_out += 1
        self.clock.stop("encode", t)

    def run(self) -> None:
        threads = [_worker("decode", self.decode_body, self.lanes[0]), _worker("step", self.step_body, self.lanes[1])]
        for th in threads:
            th.start()
        try:
            self.encode_loop()
        finally:
            self.stop.set()
            for th in threads:
                th.join(timeout=10)
        self.summary.resets, self.summary.reset_frames = self.stepper.resets, self.stepper.reset_at


def colour_constants(info: VideoInfo, bits_in: int, fmt: OutputFormat) -> dict[str, Any]:
    """The per-stream graph inputs: the source's matrix/range/depth in, the output's matrix/range/depth out."""
    matrix_in = colour.RGB if info.is_rgb else matrix_of(info)
    return {"to_rgb": colour.to_rgb(matrix_in, range_of(info), bits_in),
            "from_rgb": colour.from_rgb(fmt.matrix, fmt.color_range, fmt.bits), "peak": colour.peak(fmt.bits)}


def _copy_candidates(src: Source, opts: EncodeOptions) -> list[Any]:
    want = {"audio": opts.audio, "subtitle": opts.subtitles}
    return [s for s in src.candidates() if want.get(s.type, False)]


def _fill(summary: Summary, src: Source, backend: Backend, sink: Sink, kept: int) -> None:
    spec, info, v = backend.io_spec(), src.info, sink.video
    summary.size_in, summary.size_out = (info.width, info.height), (v.width, v.height)
    summary.scale, summary.model, summary.weights, summary.backend = spec.scale, spec.model, spec.weights, backend.name
    summary.codec, summary.pix_fmt, summary.copied_streams = v.codec_context.name, v.pix_fmt, kept


def _run_with(opts: PipelineOptions, src: Source, backend: Backend, summary: Summary, progress: Progress | None,
              device_frames: bool = False) -> None:
    spec = backend.io_spec()
    if spec.kind != VIDEO:
        raise ModelError(f"{Path(spec.weights).name} is a {spec.kind} (renderer) model; vsr-upscale runs video models")
    scale = spec.scale
    hidden_floats = sum(c * f * f for c, f in spec.hidden)  # state floats per LR pixel
    check_memory(src.info.width, src.info.height, scale, hidden_floats, opts.max_memory)
    backend.prepare(src.info.height, src.info.width)  # TensorRT builds its engine now, with progress, not mid-stream
    codec = resolve_codec(opts.encode.codec, opts.output)
    pix_fmt = choose_pix_fmt(codec, src.info, src.info.width * scale, src.info.height * scale, opts.encode.pix_fmt)
    fmt = output_format(src.info, scale, pix_fmt)
    sink = Sink(opts.output, src.container, fmt, src.info, codec, opts.encode)
    try:
        kept = sink.add_copies(src.container, _copy_candidates(src, opts.encode))
        src.copy_streams(kept)
        sink.start()
        _fill(summary, src, backend, sink, len(kept))
        _Job(opts, src, backend, sink, fmt, summary, progress, device_frames).run()
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    summary.notes += sink.notes
    summary.corrupt, summary.truncated = src.corrupt, src.truncated
    expected = src.stream.frames  # exact count from the container header, 0 when it has none
    if expected and opts.window is None and summary.frames_in + src.corrupt < expected:
        summary.truncated = True
        summary.notes.append(f"input ended after {summary.frames_in} of {expected} frames (truncated?)")
    elif src.truncated:
        summary.notes.append(f"input ended with a read error after {summary.frames_in} frames (truncated?)")
    elif src.ends_early():
        summary.truncated = True
        summary.notes.append(f"input ended at {float(src.seen_until):.2f} s of the {src.container.duration / 1e6:.2f} s "
                             "its header declares (truncated?)")
    if src.resized:
        summary.notes.append(f"frame size changed mid-stream {src.resized} time(s): resized to the first size")


def run(opts: PipelineOptions, backend: Backend | None = None, progress: Progress | None = None) -> Summary:
    """Upscale ``opts.input`` into ``opts.output``; nothing is left at the output path on any error.

    ``backend`` lets callers (tests, benchmarks) inject an opened backend; by default ``opts.backend`` is opened
    and closed here. ``progress(done, expected)`` is called from this thread after each frame.
    """
    t0 = time.perf_counter()
    summary = Summary(input=str(opts.input), output=str(opts.output))
    plan = plan_run(opts.hwaccel, opts.input, opts.output, opts.encode.codec, opts.encode.preset)
    summary.decoder, summary.video_notes, summary.video_gpu = plan.decode, list(plan.notes), plan.gpu
    opts = replace(opts, encode=replace(opts.encode, codec=plan.encoder, preset=opts.encode.preset or plan.preset))
    with Source(opts.input, opts.window, plan.hwaccel) as src:
        if backend is None:
            choice = input_choice(opts.model, src.info, opts.encode.pix_fmt)
            opened = open_backend(opts.backend, choice)
            summary.backend_notes = list(opened.notes)
            summary.notes += model_note(choice, src.info)
            try:
                _run_with(opts, src, opened.backend, summary, progress, plan.device_frames)
            finally:
                opened.backend.close()
        else:
            _run_with(opts, src, backend, summary, progress, plan.device_frames)
    summary.wall_s = time.perf_counter() - t0
    summary.fps = summary.frames_in / summary.wall_s if summary.wall_s else 0.0
    return summary
