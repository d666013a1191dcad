"""xdistil_ray: XtremeDistil-style distillation of transformer encoders on Ray.

The package's lines for the person watching a run are log records of the ``xdistil_ray``
loggers, shown as ``[xdistil] ...`` lines
(:func:`xdistil_ray.observe.console.install_line_handler`).
"""

from xdistil_ray.observe.console import install_line_handler

install_line_handler()
