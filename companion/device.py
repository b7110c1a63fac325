"""The former name of :mod:`companion.hardware`, kept so that code written against it still runs.

The module was renamed because ``device`` is also the name of every variable that holds a
``torch.device``; new code should ``from companion import hardware``.
"""

from .hardware import *  # noqa: F401,F403
from .hardware import amp_dtype, autocast, choose_device, describe, seed_everything, to_device  # noqa: F401
