"""The checkpoints that ship with the course, in `data/checkpoints/`, listed in `manifest.json`.

Each entry names a file and its sha256; `load_pretrained(name)` checks the hash before loading, so a
partial copy or an edited file is caught with a message instead of producing odd samples.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import torch

from .checkpoint import CheckpointError, file_sha256, load_checkpoint, model_from_state
from .metrics import judge_from_state

# next to the package's source; IMAGEN_TUTORIAL_CHECKPOINTS points elsewhere (e.g. after a non-editable install)
CHECKPOINT_DIR = Path(os.environ.get("IMAGEN_TUTORIAL_CHECKPOINTS",
                                     Path(__file__).resolve().parent.parent / "data" / "checkpoints"))


def checkpoint_root(root: str | Path | None = None) -> Path:
    """The folder of the shipped checkpoints: `root` if given, else IMAGEN_TUTORIAL_CHECKPOINTS as it is set now
    (so a process can point itself, and the command line, at another folder), else CHECKPOINT_DIR."""
    return Path(root or os.environ.get("IMAGEN_TUTORIAL_CHECKPOINTS") or CHECKPOINT_DIR)


def read_manifest(root: str | Path | None = None) -> dict[str, dict]:
    """name -> entry (file, sha256, config, steps, test bits/dim, how it was trained)."""
    path = checkpoint_root(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; restore it with `git checkout -- data/checkpoints`")
    return json.loads(path.read_text())["checkpoints"]


def unknown_name(name: str, root: str | Path | None = None) -> str:
    """What to say about a name that is no shipped checkpoint's: the closest names, then all of them."""
    names = sorted(read_manifest(root))
    close = difflib.get_close_matches(str(name), names, 2, cutoff=0.6)
    guess = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return f"{guess}The shipped checkpoints are {', '.join(names)}"


def shipped_state(name: str, root: str | Path | None = None) -> dict:
    """The checkpoint dict of the shipped file `name`, after checking its sha256 against the manifest."""
    root = checkpoint_root(root)
    manifest = read_manifest(root)
    if name not in manifest or "file" not in manifest[name]:
        have = ", ".join(sorted(k for k, v in manifest.items() if "file" in v)) or "none yet"
        raise ValueError(f"no shipped checkpoint file is called {name!r}; available: {have}. "
                         f"To use your own, give its path.")
    entry = manifest[name]
    path = root / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"shipped checkpoint {path} is missing; restore it with "
                                f"`git checkout -- data/checkpoints` (or `git lfs pull` if it is an LFS file)")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"{path} has sha256 {digest[:12]}… but manifest.json expects "
                              f"{entry['sha256'][:12]}…: the file is damaged or was replaced. Restore it with "
                              f"`git checkout -- data/checkpoints`.")
    return load_checkpoint(path)


def load_pretrained(name: str, device: str | torch.device = "cpu", root: str | Path | None = None):
    """A shipped model by name, in eval mode, after checking its sha256 against the manifest:
    "text2img", "superres", "bpd256" (ImageTransformer), "diffusion_base", "diffusion_sr", "scenes_base",
    "scenes_sr" (Denoiser, with their EMA weights), "cascade" and "scenes" (two diffusion stages as a Cascade),
    "classifier" (the judge: float images [B, 1, 28, 28] in [0, 1] -> logits [B, 10]) or "slot_classifier" (the
    scenes grader's classifier, the same network)."""
    root = checkpoint_root(root)
    manifest = read_manifest(root)
    if manifest.get(name, {}).get("kind") == "cascade":  # its entry holds the figures and names its two stages
        from .cascade import DEFAULT_AUG_LEVEL, DEFAULT_GUIDANCE, Cascade

        base, sr = manifest[name]["stages"]
        return Cascade(load_pretrained(base, device, root), load_pretrained(sr, device, root),
                       guidance=manifest[name].get("default_guidance", DEFAULT_GUIDANCE),
                       aug_level=manifest[name].get("default_aug_level", DEFAULT_AUG_LEVEL))
    if name not in manifest:
        raise ValueError(f"no shipped checkpoint is called {name!r}; {unknown_name(name, root)}. "
                         f"To use your own, call imagen_tutorial.load_model(path).")
    state = shipped_state(name, root)
    if state.get("kind") == "judge":
        return judge_from_state(state).to(device).eval()
    return model_from_state(state, f"shipped checkpoint {name!r}").to(device).eval()
