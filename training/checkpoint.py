"""Resumable checkpoints as safetensors (model + Adam state) with a JSON sidecar; never pickles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict, rng: np.random.Generator) -> None:
    """Write ``path`` (.safetensors) and ``path``.json atomically (temp file, then rename)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = opt.state_dict()
    for pid, st in state["state"].items():
        for name, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"opt.{pid}.{name}"] = t.detach().cpu().contiguous()
    side = {**meta, "param_groups": state["param_groups"], "rng": rng.bit_generator.state}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp_json = path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(side, indent=1))
    tmp.replace(path)
    tmp_json.replace(path.with_suffix(".json"))


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator) -> dict:
    """Restore model, optimiser and sampler RNG from ``path``; returns the saved metadata."""
    tensors = load_file(str(path))
    side = json.loads(path.with_suffix(".json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {"state": {}, "param_groups": side["param_groups"]}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(state)
    rng.bit_generator.state = side["rng"]
    return side


def warm_start(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Initialise ``model`` from the weights file ``path`` of a related model; returns the names not taken from it.

    Tensors of the same name and shape are copied. A convolution weight that gained input channels (same other
    dimensions) keeps the file's weights on its first channels and zeros on the new ones, so the new inputs
    start switched off and the model starts as the file's. Anything else keeps its fresh initialisation.
    """
    src = _read_init(path)
    fresh = []
    with torch.no_grad():
        for name, dst in model.state_dict().items():
            w = src.get(name)
            if w is not None and w.shape == dst.shape:
                dst.copy_(w)
            elif w is not None and w.dim() == 4 and w.shape[0] == dst.shape[0] and w.shape[2:] == dst.shape[2:] \
                    and w.shape[1] < dst.shape[1]:
                dst.zero_()
                dst[:, : w.shape[1]] = w
                fresh.append(f"{name}[:, {w.shape[1]}:] (zeros)")
            else:
                fresh.append(name)
    if len(fresh) == len(model.state_dict()):
        from engine.errors import ModelError

        raise ModelError(f"--init {path} shares no tensor (same name and shape) with this model; "
                         "pass weights of the same model family")
    return fresh


def _read_init(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else (a pickle, random bytes) is refused, never unpickled."""
    from safetensors import SafetensorError

    from engine.errors import InputError, ModelError

    if not Path(path).is_file():
        raise InputError(f"--init {path} does not exist or is not a file")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, OSError) as e:
        raise ModelError(f"--init {path} is not a safetensors weights file ({' '.join(str(e).split())[:120]})") from None
