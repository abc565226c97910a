"""tutorlib: the small library behind the flow-matching course.

Modules are flat, one concept each, and import only downwards (see ``STYLE``):

1. :mod:`tutorlib.device`, :mod:`tutorlib.data`
2. schedulers, paths, couplings, models
3. losses, solvers, likelihood, discrete, guidance
4. train, metrics, recipes (the measured MNIST recipe, lesson 09)
5. plotting, widgets, exercises, bench

Notation used everywhere: ``x_0`` is the source (noise), ``x_1`` the data, ``t`` runs
from 0 (noise) to 1 (data), ``x_t`` a point on a path and ``dx_t`` its velocity.
"""

__version__ = "0.1.0"
