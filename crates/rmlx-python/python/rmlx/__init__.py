"""rmlx from Python.

``import rmlx.core as mx`` gives MLX's array API (``mlx.core`` names and keyword arguments);
``import rmlx.lm`` gives mlx_lm's ``load``, ``generate`` and ``stream_generate``.
"""

from . import core

__all__ = ["core"]
__version__ = core.__version__
