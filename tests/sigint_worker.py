"""Train through the command line and press Ctrl-C twice inside step 3, after that step drew its batch and its
random numbers: two real SIGINTs, the second while the step is half done (test_train's double Ctrl-C test).
argv: config file, output folder. Exit code: the command's (130 after Ctrl-C)."""

import signal
import sys

from imagen_tutorial.__main__ import main
from imagen_tutorial.train import Trainer

draw = Trainer.next_batch


def next_batch(self):
    batch = draw(self)
    if self.step == 2:  # step 3 has its batch: Ctrl-C ("stopping after this step"), then Ctrl-C again ("now")
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
    return batch


Trainer.next_batch = next_batch
sys.exit(main(["train", "--config", sys.argv[1], "--out", sys.argv[2]]))
