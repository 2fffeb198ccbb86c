"""Saving and loading checkpoints safely.

Saves are atomic (write a temporary file, then `os.replace`), so an interrupted save never destroys the
previous checkpoint. Loads use `torch.load(weights_only=True)`, which refuses pickled code, and turn every
failure (missing, truncated, tampered, another model config) into an error that says what to do.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .denoiser import Denoiser
from .model import ImageTransformer

FORMAT = "imagen-tutorial/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupted, unsafe, or made for another model."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(state: Any) -> str:
    """sha256 over every tensor's bytes and every plain value, in a fixed order. Stored inside the checkpoint,
    it catches bytes changed inside tensor data, which torch.load itself does not notice."""
    digest = hashlib.sha256()

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            digest.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
            digest.update(obj.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for key in sorted(obj, key=repr):
                digest.update(f"K{key!r}".encode())
                walk(obj[key])
        elif isinstance(obj, (list, tuple)):
            digest.update(f"L{len(obj)}".encode())
            for item in obj:
                walk(item)
        else:
            digest.update(f"V{obj!r}".encode())

    walk(state)
    return digest.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` (plain data and tensors) to `path` atomically: the old file stays until the new one is whole."""
    state = {"format": FORMAT, **state}
    state["content_sha256"] = content_digest(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_config(saved: dict[str, Any], expected: ModelConfig, source: str = "the checkpoint") -> None:
    """Raise CheckpointError naming every field where `saved` differs from `expected`."""
    wanted, default = expected.to_dict(), ModelConfig().to_dict()  # fields added later keep their defaults
    saved = {k: saved.get(k, default[k]) for k in wanted}
    diffs = [f"{k}={saved[k]!r} in {source} but {wanted[k]!r} here" for k in wanted if saved[k] != wanted[k]]
    if diffs:
        raise CheckpointError(
            f"{source} was made for another model config: {'; '.join(diffs)}. Build the model from the "
            f"checkpoint's own config (imagen_tutorial.load_model(path)) or pick a checkpoint made for this one."
        )


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save(_use_new_zipfile_serialization=False)
_ALTERED = ("has been altered or damaged: its contents no longer match the checksum written when it was saved. "
            "Use an earlier copy or re-create it; do not train or sample from this file.")


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:160]


def _corrupted(path: Path, error: BaseException | str) -> CheckpointError:
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {_last_line(error)}"
    return CheckpointError(
        f"{path} is truncated or corrupted and cannot be read ({reason}). Use an earlier copy or re-create it; "
        f"training writes checkpoints atomically, so this usually means a cut-short copy.")


def check_file_structure(path: Path) -> None:
    """Recognise a checkpoint by its first bytes before torch reads it: a whole zip archive with torch's
    data.pkl and intact CRCs, or the legacy format. Anything else raises CheckpointError saying what it is."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                damaged = archive.testzip()  # first member whose bytes fail their CRC-32, or None
        except Exception:  # noqa: BLE001 - no readable directory at the end: the copy was cut short
            raise _corrupted(path, "a zip archive whose end is missing") from None
        if not any(name.endswith("/data.pkl") for name in names):
            raise CheckpointError(f"{path} is not a checkpoint file: it is a zip archive of {len(names)} file(s) "
                                  f"without torch's data.pkl. A checkpoint is written by training (the "
                                  f"--out folder's checkpoint.pt) or by imagen_tutorial.checkpoint.export_model.")
        if damaged is not None:
            raise CheckpointError(f"{path} {_ALTERED} (the bytes of {damaged} fail their CRC)")
        return
    if head.startswith(LEGACY_MAGIC):
        return
    if head and (ZIP_MAGIC.startswith(head) or LEGACY_MAGIC.startswith(head)):
        raise _corrupted(path, f"only {len(head)} bytes")
    if head.startswith(b"versio") and b"git-lfs" in path.read_bytes()[:200]:
        raise CheckpointError(f"{path} is not a checkpoint file but a Git LFS pointer to one: fetch the real "
                              f"file with `git lfs pull`")
    what = "it is empty" if not head else f"it starts with {head[:12]!r}"
    raise CheckpointError(f"{path} is not a checkpoint file ({what}; a checkpoint is written by training, the "
                          f"--out folder's checkpoint.pt, or by imagen_tutorial.checkpoint.export_model).")


def load_checkpoint(path: str | Path, config: ModelConfig | None = None, map_location: str = "cpu") -> dict:
    """Read a checkpoint dict (weights_only=True). With `config`, also check it was made for that config."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; a training run keeps its checkpoint "
                              f"in {path / 'checkpoint.pt'}")
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist. Train one with `python -m imagen_tutorial train --out DIR` "
            f"(it writes DIR/checkpoint.pt) or use load_pretrained(name) for a shipped one."
        )
    check_file_structure(path)
    if isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "cuda" and \
            not torch.cuda.is_available():  # else torch's refusal would read as a damaged file
        raise ValueError(f"cannot load {path} onto {map_location}: PyTorch sees no CUDA GPU on this machine; "
                         f"use map_location='cpu' (--device cpu)")
    try:
        with warnings.catch_warnings():  # damaged bytes can look like an unusual pickle protocol
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):  # an opcode weights_only does not know: damaged bytes, not code
            raise _corrupted(path, error) from None
        raise CheckpointError(
            f"refusing to load {path}: it contains code, pickled Python objects beyond tensors and plain data, "
            f"and loading those could run code. Only load checkpoints you made or trust. "
            f"(torch: {_last_line(error)})"
        ) from None
    except Exception as error:  # noqa: BLE001 - any failure to parse these bytes means a damaged file
        raise _corrupted(path, error) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or (
            "model_config" not in state and state.get("kind") != "judge"):
        raise CheckpointError(f"{path} is not an imagen-tutorial checkpoint (expected format {FORMAT!r}): a "
                              f"torch file written by other code. Checkpoints come from training or export_model.")
    stored = state.pop("content_sha256", None)
    if stored != content_digest(state):
        raise CheckpointError(f"{path} {_ALTERED}")
    if config is not None:
        if "model_config" not in state:
            raise CheckpointError(f"{path} holds the judge classifier, not an image model for {config}")
        check_config(state["model_config"], config, f"checkpoint {path}")
    return state


def build_model(config: ModelConfig) -> ImageTransformer | Denoiser:
    """The network `config.family` names: the autoregressive ImageTransformer or the diffusion Denoiser."""
    return Denoiser(config) if config.family == "diffusion" else ImageTransformer(config)


def check_finite_weights(weights: dict[str, torch.Tensor], source: str,
                         consequence: str = "it cannot score or draw images") -> None:
    """Refuse weights holding NaN or inf (saved by a run that diverged before saves checked their weights)."""
    broken = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{source} holds NaN or inf weights ({', '.join(broken[:3])}"
                              f"{', ...' if len(broken) > 3 else ''}), so {consequence}: use an earlier checkpoint "
                              f"or retrain with a lower lr")


def model_from_state(state: dict, source: str = "the checkpoint",
                     family: str | None = None) -> ImageTransformer | Denoiser:
    """Build the model a checkpoint dict describes and load its weights (fp16-stored weights come back fp32).
    A checkpoint with an EMA of the weights gives the EMA (what diffusion samples with). `family`: refuse a
    checkpoint of the other family ("autoregressive" or "diffusion") with a message that says so."""
    if state.get("kind") == "judge":
        raise CheckpointError(f"{source} is the judge classifier, not an image model: load it with "
                              f"load_pretrained('classifier') or imagen_tutorial.metrics.load_judge(path)")
    try:
        config = ModelConfig.from_dict(state["model_config"])
    except ValueError as error:
        raise CheckpointError(f"{source} has an invalid model config: {error}") from None
    if family is not None and config.family != family:
        def a(word: str) -> str:
            return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"
        raise CheckpointError(f"{source} holds {a(config.family)} model, not {a(family)} one: "
                              f"pick a {family} checkpoint (e.g. load_pretrained('diffusion_base') for diffusion, "
                              f"load_pretrained('text2img') for the autoregressive model)")
    model = build_model(config)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state.get("ema", state["model"]).items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{source} does not match its own config ({str(error)[:300]})") from None
    check_finite_weights(weights, source)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu",
               family: str | None = None) -> ImageTransformer | Denoiser:
    """A trained model from a checkpoint file, in eval mode on `device` (`family`: refuse the other family)."""
    return model_from_state(load_checkpoint(path), f"checkpoint {path}", family).to(device).eval()


def export_model(model: ImageTransformer, path: str | Path, half: bool = False, **info: Any) -> Path:
    """Write weights and config only (no optimizer), optionally as fp16 to halve the file."""
    weights = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
               for k, v in model.state_dict().items()}
    return save_checkpoint({"model": weights, "model_config": model.config.to_dict(), **info}, path)
