"""Federated benchmark: FedVSR vs FedAvg vs FedProx vs FedMedian on one non-IID split, seed and budget.

Every strategy trains from the same initial model on the same client partitions with the same local
budget (production code: training.federated.run_federated); the global model is scored on Vid4 after
each round through benchmarks.quality. Outputs under OUT:

    OUT/<strategy>/global.safetensors, history.json, history.png   one federated run each
    OUT/summary.json, OUT/summary.md, OUT/compare.png              the comparison

A strategy whose run already finished in OUT is not retrained, so an interrupted benchmark resumes.
Usage (smoke size; see docs/federated.md for the full command):

    python -m benchmarks.federated --out /tmp/fed-smoke --model rvsr-tiny --rounds 2 --local-steps 2 \
        --patch 32 --batch 2 --eval-frames 2 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

STRATEGIES = ("fedvsr", "fedavg", "fedprox", "fedmedian")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.federated", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="benchmark folder (one sub-folder per strategy)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list, run in this order")
    p.add_argument("--model", default="rvsr-s")
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--partition", default="content", choices=("iid", "content", "content-equal", "quantity"),
                   help="content-equal: non-IID by content with equal client sizes (the FedVSR paper's kind of split)")
    p.add_argument("--degradation", default="bi", choices=("bi", "bd", "real"),
                   help="LR degradation of every client (real: training/realworld.py's blur, resize, noise, codecs)")
    p.add_argument("--local-epochs", type=float, default=1.0)
    p.add_argument("--local-steps", type=int, default=0, help="cap per round (0 = a full local epoch)")
    p.add_argument("--prox-mu", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--frames", type=int, default=7)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-frames", type=int, default=20, help="Vid4 frames per clip per round (0 = off)")
    p.add_argument("--eval-dir", default="../shared/data/vid4")
    p.add_argument("--data", type=Path, help=".npz of sequences instead of the data cache")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--baseline-hf-weight", type=float, default=0.0,
                   help="3D Haar loss weight of FedAvg/FedProx/FedMedian clients (FedVSR uses --hf-weight); "
                        "the paper's baselines train on Charbonnier alone")
    p.add_argument("--hf-weight", type=float, default=1.0, help="FedVSR clients' 3D Haar loss weight")
    return p


def finished(folder: Path, rounds: int) -> dict | None:
    """The history of a completed run in ``folder``, else None."""
    hist = folder / "history.json"
    if not (folder / "global.safetensors").exists() or not hist.exists():
        return None
    history = json.loads(hist.read_text())
    return history if len(history["rounds"]) == rounds else None


def total(h: dict, key: str) -> float | None:
    """Sum of a per-round timing over a history (None when any round lacks it)."""
    values = [r.get(key) for r in h["rounds"]]
    return None if any(v is None for v in values) else sum(values)


def summarise(histories: dict[str, dict], initial: dict | None) -> dict:
    """Per strategy: final and best Vid4 scores, last-round client losses, training and aggregation time
    (summed from the histories, so a resumed benchmark keeps them) and their ratios to FedAvg."""
    rows = {}
    for name, h in histories.items():
        last = h["rounds"][-1]
        psnr = [r["eval_psnr"] for r in h["rounds"] if r["eval_psnr"] is not None]
        rows[name] = {"final_psnr": last["eval_psnr"], "final_ssim": last["eval_ssim"],
                      "best_psnr": max(psnr) if psnr else None,
                      "best_round": 1 + psnr.index(max(psnr)) if psnr else None,
                      "final_mean_loss": sum(last["client_losses"]) / len(last["client_losses"]),
                      "final_client_losses": last["client_losses"],
                      "train_sec": total(h, "train_sec"), "agg_sec": total(h, "agg_sec")}
    ref = rows.get("fedavg", {})
    for r in rows.values():
        for key in ("train_sec", "agg_sec"):
            ok = r[key] is not None and ref.get(key)
            r[key.replace("_sec", "_vs_fedavg")] = r[key] / ref[key] if ok else None
    return {"initial": initial, "strategies": rows}


def step_timer(cfg, clients, hf_weight: float, baseline_hf_weight: float, prox_mu: float) -> Callable[[str], float]:
    """ms of one optimiser step of the benchmark's model on one fixed batch with strategy ``name``'s local loss
    (FedVSR: + the 3D Haar term; FedProx: + the proximal term)."""
    import numpy as np
    import torch

    from engine.models import build_model
    from training.train import SequenceSampler, local_train

    batch = next(iter(SequenceSampler(clients[0].seqs, cfg, np.random.default_rng(0))))
    model = build_model(cfg.model, cfg.scale)
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    ref = [p.detach().clone() for p in model.parameters()]
    baseline = replace(cfg, hf_weight=baseline_hf_weight)
    local = {"fedavg": (baseline, None), "fedprox": (baseline, (ref, prox_mu)), "fedmedian": (baseline, None),
             "fedvsr": (replace(cfg, hf_weight=hf_weight), None)}

    def step_ms(name: str) -> float:
        c, prox = local[name]
        t0 = time.perf_counter()
        local_train(model, iter([batch]), 1, opt, c, prox=prox)
        return 1e3 * (time.perf_counter() - t0)

    return step_ms


def aggregation_timer(cfg, clients, prox_mu: float, calls: int = 20) -> Callable[[str], float]:
    """ms of strategy ``name``'s aggregate over K client updates of the model's real size (mean of ``calls``)."""
    import numpy as np

    from training.federated import initial_params
    from training.strategies import ClientUpdate, build_strategy

    base, rng = initial_params(cfg), np.random.default_rng(1)
    updates = [ClientUpdate(k, {n: v + rng.normal(0, 1e-3, v.shape).astype(np.float32) for n, v in base.items()},
                            len(c.seqs), 0.02 + 0.01 * k) for k, c in enumerate(clients)]
    strategies = {n: build_strategy(n, prox_mu, False) for n in STRATEGIES}

    def agg_ms(name: str) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            strategies[name].aggregate(updates, 1, 20)
        return 1e3 * (time.perf_counter() - t0) / calls

    return agg_ms


def ratios_to_fedavg(timer: Callable[[str], float], name: str, repeats: int) -> tuple[float, float]:
    """(median ms of ``name``, median of its per-pair ratio to FedAvg), pairs interleaved as `vsr-bench latency
    --compare` does (benchmarks.compare.alternate)."""
    import statistics

    from benchmarks.compare import alternate

    ta, tb = alternate(lambda: timer("fedavg"), lambda: timer(name), repeats)
    return statistics.median(tb), statistics.median(b / a for a, b in zip(ta, tb))


def overheads(cfg, clients, hf_weight: float, baseline_hf_weight: float, prox_mu: float, repeats: int = 12) -> dict:
    """Local-step and aggregation cost of each strategy relative to FedAvg, measured interleaved with FedAvg on
    the same batch and the same client updates: {strategy: {"step_vs_fedavg", "agg_ms", "agg_vs_fedavg"}}."""
    step = step_timer(cfg, clients, hf_weight, baseline_hf_weight, prox_mu)
    agg = aggregation_timer(cfg, clients, prox_mu)
    step("fedavg"), agg("fedavg")  # warm-up
    out = {}
    for name in STRATEGIES:
        _, step_ratio = ratios_to_fedavg(step, name, repeats)
        agg_ms, agg_ratio = ratios_to_fedavg(agg, name, repeats)
        out[name] = {"step_vs_fedavg": step_ratio, "agg_ms": agg_ms, "agg_vs_fedavg": agg_ratio}
    return out


def write_markdown(path: Path, summary: dict, header: str) -> None:
    columns = ("| strategy | Vid4 Y-PSNR final | best (round) | Y-SSIM final | mean client loss, last round "
               "| training s (vs FedAvg) | aggregation ms (vs FedAvg) |")
    lines = [f"# Federated benchmark\n\n{header}\n", columns, "|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "–" if v is None else format(v, f)
    for name, r in summary["strategies"].items():
        lines.append(f"| {name} | {fmt(r['final_psnr'], '.3f')} | {fmt(r['best_psnr'], '.3f')} ({r['best_round']}) "
                     f"| {fmt(r['final_ssim'], '.4f')} | {r['final_mean_loss']:.5f} "
                     f"| {fmt(r['train_sec'], '.0f')} ({fmt(r['train_vs_fedavg'], '.3f')}×) "
                     f"| {fmt(r['agg_sec'] and 1e3 * r['agg_sec'], '.1f')} ({fmt(r['agg_vs_fedavg'], '.2f')}×) |")
    if summary["initial"]:
        lines.append(f"\nInitial (untrained) model: Y-PSNR {summary['initial']['y_psnr']:.3f} dB.")
    if summary.get("overheads"):
        lines += ["", "Cost relative to FedAvg, measured interleaved with FedAvg on one batch and one set of K updates "
                  "(medians of pairs; robust to machine load, unlike the wall-clock columns above):", "",
                  "| strategy | local step vs FedAvg | aggregation ms | aggregation vs FedAvg |", "|---|---|---|---|"]
        for name, o in summary["overheads"].items():
            lines.append(f"| {name} | {o['step_vs_fedavg']:.3f}× | {o['agg_ms']:.2f} | {o['agg_vs_fedavg']:.2f}× |")
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, histories: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for name, h in histories.items():
        t = [r["round"] for r in h["rounds"]]
        a.plot(t, [sum(r["client_losses"]) / len(r["client_losses"]) for r in h["rounds"]], marker=".", label=name)
        psnr = [(r["round"], r["eval_psnr"]) for r in h["rounds"] if r["eval_psnr"] is not None]
        if psnr:
            b.plot(*zip(*psnr), marker=".", label=name)
    a.set(title="mean client loss", xlabel="round", yscale="log")
    b.set(title="Vid4 Y-PSNR of the global model (dB)", xlabel="round")
    from matplotlib.ticker import MaxNLocator

    b.ticklabel_format(axis="y", useOffset=False)
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prefixed(name: str) -> Callable[[str], None]:
    """A log function that prints with the strategy's name in front."""
    return lambda line: print(f"{name}: {line}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from engine.errors import VsrError
    from training.fed_report import load_groups, vid4_evaluator
    from training.federated import FedConfig, check_configs, initial_params, run_federated
    from training.partition import partition
    from training.train import TrainConfig

    torch.set_num_threads(args.threads)
    if args.degradation == "real" and importlib.util.find_spec("training.realworld") is None:
        print("benchmarks.federated: error: --degradation real needs training/realworld.py", file=sys.stderr)
        return 2
    names = [s for s in args.strategies.split(",") if s]
    cfg = TrainConfig(model=args.model, scale=args.scale, batch=args.batch, patch=args.patch, frames=args.frames,
                      lr=args.lr, seed=args.seed, hf_weight=args.hf_weight, degradation=args.degradation)
    strategy_cfg = {name: cfg if name == "fedvsr" else replace(cfg, hf_weight=args.baseline_hf_weight)
                    for name in STRATEGIES}
    base = FedConfig(clients=args.clients, rounds=args.rounds, partition=args.partition, local_epochs=args.local_epochs,
                     local_steps=args.local_steps, prox_mu=args.prox_mu, eval_frames=args.eval_frames,
                     eval_dir=str(Path(args.eval_dir).resolve()))
    command = "python -m benchmarks.federated " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        for name in names:
            check_configs(strategy_cfg.get(name, cfg), replace(base, strategy=name))
        evaluate = vid4_evaluator(cfg, base.eval_frames, base.eval_dir)
        clients = partition(load_groups(cfg, args.data), base.clients, base.partition, cfg.seed)
        print("clients:", json.dumps([c.summary() for c in clients]))
        initial = evaluate(initial_params(cfg)) if evaluate else None
        histories = {}
        for name in names:
            folder = args.out / name
            if (done := finished(folder, base.rounds)) is not None:
                print(f"{name}: already finished in {folder}")
                histories[name] = done
                continue
            _, histories[name] = run_federated(clients, strategy_cfg[name], replace(base, strategy=name), folder,
                                               command, log=prefixed(name), evaluate=evaluate)
    except (VsrError, ValueError, LookupError, OSError) as err:
        print(f"benchmarks.federated: error: {' '.join(str(err).split())}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    summary = {**summarise(histories, initial), "train": asdict(cfg), "fed": asdict(base),
               "overheads": overheads(cfg, clients, args.hf_weight, args.baseline_hf_weight, args.prox_mu),
               "clients": [c.summary() for c in clients], "command": command}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    header = (f"model {cfg.model} x{cfg.scale}, K={base.clients} ({base.partition}), {base.rounds} rounds, "
              f"3D Haar loss weight {args.hf_weight} for FedVSR and {args.baseline_hf_weight} for the baselines, "
              f"local epochs {base.local_epochs} (cap {base.local_steps or 'none'}), seed {cfg.seed}; `{command}`")
    write_markdown(args.out / "summary.md", summary, header)
    plot(args.out / "compare.png", histories)
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
