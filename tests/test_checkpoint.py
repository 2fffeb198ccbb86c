"""Checkpoints: atomic saves, and a clear refusal for every kind of bad file."""

import json
import os
import pickle
import random
import zipfile

import pytest
import torch
from conftest import tiny_config, tiny_model

from imagen_tutorial import CheckpointError, load_checkpoint, load_model, load_pretrained, save_checkpoint
from imagen_tutorial.checkpoint import export_model, file_sha256


def test_saved_model_loads_back_identically(tmp_path):
    model = tiny_model("lowres")
    path = export_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    images, cond = torch.randint(0, 8, (2, 6, 6)), torch.rand(2, 1, 3, 3)
    assert torch.equal(loaded(images, cond), model(images, cond))
    assert loaded.config == model.config and not loaded.training


def test_fp16_export_loads_as_fp32(tmp_path):
    model = tiny_model("caption")
    loaded = load_model(export_model(model, tmp_path / "half.pt", half=True))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(loaded.decoder.head.weight, model.decoder.head.weight, atol=1e-3, rtol=1e-3)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"model_config": {}, "step": 1}, tmp_path / "c.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the learner pressed Ctrl-C mid-save

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model_config": {}, "step": 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist\. Train one with"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint_is_refused(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is truncated or corrupted and cannot be read"):
        load_checkpoint(path)


def test_tampered_tensor_bytes_are_caught(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the weights, where torch.load itself would not notice
    data[middle : middle + 4] = b"\x00\x00\xc0\x7f"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="has been altered or damaged"):
        load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "imagen-tutorial/1", "model_config": {}, "payload": os.system}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*pickled Python objects.*could run code"):
        load_checkpoint(path)


def test_not_our_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="is not an imagen-tutorial checkpoint"):
        load_checkpoint(path)


def test_checkpoint_from_another_config_names_the_fields(tmp_path):
    path = export_model(tiny_model(levels=8), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"levels=8 in checkpoint .* but 16 here; d_model=32 .* but 64 here"):
        load_checkpoint(path, config=tiny_config(levels=16, d_model=64))


def _ship(tmp_path, name="tiny"):
    path = export_model(tiny_model(), tmp_path / f"{name}.pt", half=True)
    manifest = {"checkpoints": {name: {"file": path.name, "sha256": file_sha256(path)}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_load_pretrained_checks_the_manifest(tmp_path):
    path = _ship(tmp_path)
    model = load_pretrained("tiny", root=tmp_path)
    assert not model.training and model.config == tiny_config()
    with pytest.raises(ValueError, match=r"no shipped checkpoint is called 'tiyn'; did you mean 'tiny'\? The shipped "
                                         r"checkpoints are tiny"):
        load_pretrained("tiyn", root=tmp_path)
    path.write_bytes(path.read_bytes() + b"extra")
    with pytest.raises(CheckpointError, match="manifest.json expects .* damaged or was replaced"):
        load_pretrained("tiny", root=tmp_path)


def test_shipped_manifest_is_valid():
    from imagen_tutorial.pretrained import read_manifest

    for name, entry in read_manifest().items():
        if entry.get("kind") == "cascade":  # the figures of two shipped stages, no file of its own
            assert set(entry["stages"]) <= set(read_manifest()), name
            continue
        assert {"file", "sha256"} <= set(entry), name


def test_checkpoint_from_before_a_config_field_existed_still_loads(tmp_path):
    model = tiny_model("lowres")
    path = export_model(model, tmp_path / "old.pt")
    state = torch.load(path, weights_only=True)
    del state["model_config"]["pixel_condition"], state["content_sha256"]  # as written before the field existed
    save_checkpoint(state, path)
    loaded = load_model(path)
    assert loaded.config == model.config


def test_checkpoint_folder_can_be_moved_with_an_environment_variable(tmp_path):
    import subprocess
    import sys

    _ship(tmp_path)
    code = "from imagen_tutorial import load_pretrained; print(load_pretrained('tiny').config.d_model)"
    env = {**os.environ, "IMAGEN_TUTORIAL_CHECKPOINTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tiny_config().d_model)


KNOWN_REFUSALS = ("is not a checkpoint file", "is truncated or corrupted", "has been altered or damaged",
                  "contains code", "is not an imagen-tutorial checkpoint")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"is not a checkpoint file \(it is empty;"),
        (b"hello, I am a text file\n", r"is not a checkpoint file \(it starts with b'hello, I am '; a checkpoint is "
                                       r"written by training"),
        (bytes(range(200, 256)), r"is not a checkpoint file \(it starts with b'\\xc8"),
        (pickle.dumps({"model": [1, 2]}), "is not a checkpoint file"),  # a plain pickle, not torch.save: not "code"
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "a Git LFS pointer to one: .*git lfs pull"),
        (b"PK\x03", r"is truncated or corrupted and cannot be read \(only 3 bytes\)"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path, content, message):
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_zip_archive_or_a_folder_is_not_a_checkpoint(tmp_path):
    with zipfile.ZipFile(tmp_path / "notes.pt", "w") as archive:
        archive.writestr("notes.txt", "not weights")
    with pytest.raises(CheckpointError, match="is not a checkpoint file: it is a zip archive of 1 file"):
        load_checkpoint(tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)


def test_any_bytes_at_all_give_one_of_the_known_refusals(tmp_path):
    # A property over random files: random bytes (some behind the headers of torch's two formats), every
    # prefix length of a real checkpoint (a cut-short copy) and single bit flips in one. The loader must answer
    # each with a CheckpointError it knows, never another exception (and a flip may also change nothing).
    real = export_model(tiny_model(), tmp_path / "real.pt").read_bytes()
    rng = random.Random(0)
    headers = (b"", b"PK\x03\x04", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19", b"\x80\x02", b"\x80\x04\x95")
    cases = [rng.choice(headers) + rng.randbytes(rng.choice((0, 1, 7, 60, 900))) for _ in range(200)]
    cases += [real[:n] for n in range(0, len(real), len(real) // 50)]
    for _ in range(50):
        flipped = bytearray(real)
        flipped[rng.randrange(len(real))] ^= 1 << rng.randrange(8)
        cases.append(bytes(flipped))
    path = tmp_path / "case.pt"
    for content in cases:
        path.write_bytes(content)
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            assert any(known in str(error) for known in KNOWN_REFUSALS), str(error)
        else:
            assert content != real[: len(content)] or content == real  # only a harmless flip loads
            assert state["model_config"] == tiny_config().to_dict()


def test_a_checkpoint_with_nan_weights_is_refused_before_sampling(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.decoder.head.weight[0, 0] = float("nan")
    path = export_model(model, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"holds NaN or inf weights \(decoder.head.weight\)"):
        load_model(path)
