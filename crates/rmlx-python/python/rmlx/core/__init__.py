"""rmlx's array API with mlx.core's names: ``import rmlx.core as mx``.

Everything here is the native module ``rmlx._core`` (no Python wrappers, so a call costs what
the binding costs); ``mx.random``, ``mx.fast``, ``mx.linalg``, ``mx.metal`` and ``mx.cuda`` are
importable as modules too.
"""

import sys as _sys

from rmlx import _core
from rmlx._core import *  # noqa: F401,F403
from rmlx._core import __version__, _lm, cuda, fast, linalg, metal, random  # noqa: F401

for _m in (random, fast, linalg, metal, cuda):
    _sys.modules[__name__ + "." + _m.__name__.rsplit(".", 1)[-1]] = _m
del _m
