"""Run by test_train.py under torchrun (2 processes, gloo on CPU): train 3 steps, save each rank's weights."""

import sys
from pathlib import Path

import torch
from conftest import tiny_config

from imagen_tutorial import TrainConfig
from imagen_tutorial.data import load_fashion_mnist
from imagen_tutorial.train import Trainer

out = Path(sys.argv[1])
images, labels = load_fashion_mnist("test")
cfg = TrainConfig(batch_size=16, steps=3, warmup_steps=1, log_every=1, eval_every=0, ckpt_every=100,
                  progress=False, seed=3, device="cpu")
trainer = Trainer(tiny_config(), cfg, out, data=(images[:128], labels[:128]))
assert trainer.world == 2 and trainer.micro_batch == 8
trainer.run()
torch.save(trainer.model.state_dict(), out / f"rank{trainer.rank}.pt")
torch.distributed.destroy_process_group()
