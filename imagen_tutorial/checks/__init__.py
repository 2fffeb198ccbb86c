"""Exercise checks for the notebooks: run a learner's function beside the reference and say what differs.

Every `check_*` prints ✅ (right), ❌ (wrong) or ➖ (not attempted) and returns the function the notebook should go
on with: the learner's if it is right, otherwise the reference, so a notebook still runs top to bottom with an
exercise left blank or wrong. Later cells say whose code ran with `checks.whose(fn)`. Where a wrong answer
matches a known mistake (a missing √d scale, a mask applied after the softmax, …) the message names it, and the
check records a `Verdict` (status, the mistake's stable id, the message) that `last_verdict(name)` returns: the
grader reads those. One module per chapter, each with its `EXERCISES`; all checks are available as
`imagen_tutorial.checks.check_*`, and `CHAPTERS` maps "00" … "11" to each chapter's exercises.
"""

from . import (
    ch00_data,
    ch01_attention,
    ch02_blocks,
    ch03_encoder,
    ch04_decoder,
    ch05_training,
    ch06_sampling,
    ch07_applications,
    ch08_imagen,
    ch09_diffusion,
    ch10_cascade,
    ch11_captions,
)
from .ch00_data import *  # noqa: F403
from .ch01_attention import *  # noqa: F403
from .ch02_blocks import *  # noqa: F403
from .ch03_encoder import *  # noqa: F403
from .ch04_decoder import *  # noqa: F403
from .ch05_training import *  # noqa: F403
from .ch06_sampling import *  # noqa: F403
from .ch07_applications import *  # noqa: F403
from .ch08_imagen import *  # noqa: F403
from .ch09_diffusion import *  # noqa: F403
from .ch10_cascade import *  # noqa: F403
from .ch11_captions import *  # noqa: F403
from .core import (  # noqa: F401
    REFERENCE,
    STATUSES,
    Exercise,
    Mistake,
    Verdict,
    compare,
    draws_match,
    generator_use,
    last_verdict,
    reference_given,
    whose,
)

CHAPTERS: dict[str, tuple[Exercise, ...]] = {
    module.__name__.rsplit(".", 1)[-1][2:4]: module.EXERCISES
    for module in (ch00_data, ch01_attention, ch02_blocks, ch03_encoder, ch04_decoder, ch05_training, ch06_sampling,
                   ch07_applications, ch08_imagen, ch09_diffusion, ch10_cascade, ch11_captions)
}
