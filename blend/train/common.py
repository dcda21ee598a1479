"""What every training loop shares: seeding, progress, and resumable checkpoints in safetensors."""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .. import world


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cosine_lr(step: int, total: int, base: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{idx}.{key}"] = t.detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    return {"state": state, "param_groups": meta["param_groups"]}


class Checkpoint:
    """A resumable training state in one folder: `state.safetensors` (model + optimizer) and `state.json`.

    Only tensors and JSON are written, so resuming never unpickles anything.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def save(self, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, extra: dict | None = None):
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}  # clone: unties shared
        opt_tensors, opt_meta = _flatten_optimizer(opt)
        tensors.update(opt_tensors)
        tmp = self.folder / "state.safetensors.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, self.folder / "state.safetensors")
        meta = {"step": step, "optimizer": opt_meta, "torch_rng": torch.get_rng_state().tolist(),
                "python_rng": repr(random.getstate()), **(extra or {})}
        (self.folder / "state.json").write_text(json.dumps(meta))

    def resume(self, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: random.Random) -> int:
        """Restore model, optimizer and both random streams if a checkpoint exists; the step to start from."""
        if not self.exists:
            return 0
        step = self.load(model, opt)["step"]
        rng.setstate(random.getstate())
        return step

    def step_done(self, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: random.Random, step: int,
                  steps: int, stop_at: int | None, every: int) -> bool:
        """Checkpoint every `every` steps, at the last step and at `stop_at`; True when the run stops here.

        `stop_at` makes a run a time slice of a longer one: the same call later resumes it exactly.
        """
        if step % every == 0 or step in (steps, stop_at):
            random.setstate(rng.getstate())  # the batch stream's state travels as the global one's
            self.save(model, opt, step)
        return step == stop_at

    def load(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
        tensors = load_file(str(self.folder / "state.safetensors"))
        meta = json.loads((self.folder / "state.json").read_text())
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt.load_state_dict(_unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("opt.")},
                                                 meta["optimizer"]))
        torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
        random.setstate(_literal_state(meta["python_rng"]))
        return meta


def _literal_state(text: str):
    import ast
    return ast.literal_eval(text)


class Progress:
    """A tqdm bar plus a JSON-lines log of metrics (for runs in the background, read with `tail -f`)."""

    def __init__(self, total: int, initial: int, desc: str, log_path: str | Path | None = None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=2.0)
        self.log = open(log_path, "a") if log_path else None
        self.t0 = time.time()

    def update(self, step: int, **metrics):
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        if self.log and (step % 10 == 0):
            self.log.write(json.dumps({"step": step, "elapsed": round(time.time() - self.t0, 1), **metrics}) + "\n")
            self.log.flush()

    def write(self, text: str):
        self.bar.write(text)
        if self.log:
            self.log.write(json.dumps({"message": text}) + "\n")
            self.log.flush()

    def close(self):
        self.bar.close()
        if self.log:
            self.log.close()


def save_half(module, folder) -> None:
    """`save_pretrained` in fp16 (half the bytes on disk; the decoder loads it back as fp32), the module untouched."""
    import copy

    copy.deepcopy(module).half().save_pretrained(str(folder))


def encode_renders(clip, scenes) -> torch.Tensor:
    """(B, D) unit CLIP image embeddings of the scenes' renders."""
    return F.normalize(clip.encode_image(world.to_tensor([world.render(s) for s in scenes])), dim=-1)
