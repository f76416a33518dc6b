"""rmlx's array API with mlx.core's names: ``import rmlx.core as mx``.

Everything here is the native module ``rmlx._core`` (no Python wrappers, so a call costs what
the binding costs); ``mx.random`` and ``mx.fast`` are importable as modules too.
"""

import sys as _sys

from rmlx import _core
from rmlx._core import *  # noqa: F401,F403
from rmlx._core import __version__, _lm, fast, random  # noqa: F401

_sys.modules[__name__ + ".random"] = random
_sys.modules[__name__ + ".fast"] = fast
