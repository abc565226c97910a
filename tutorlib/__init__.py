"""tutorlib: the small library behind the flow-matching course.

Modules are flat, one concept each, and import only downwards (CONTRIBUTING.md, "Layers"):

1. utils, device, files, data, mnist, checkpoints, claims
2. schedulers, paths, couplings, models
3. losses, solvers, likelihood, discrete, guidance, ddpm
4. train, metrics, judge, recipes (the measured MNIST recipe, lesson 09)
5. plotting, widgets, exercises (one module of checks per lesson)

Tooling (the bench, the book build, the claims command) lives beside the package and imports it.

Notation used everywhere: ``x_0`` is the source (noise), ``x_1`` the data, ``t`` runs
from 0 (noise) to 1 (data), ``x_t`` a point on a path and ``dx_t`` its velocity.
"""

__version__ = "0.1.0"
