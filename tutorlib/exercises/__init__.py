"""Self-checks for the lessons' exercises: one module per lesson, one machinery for all.

A lesson imports its checks from its own module and calls them on the learner's function::

    from tutorlib.exercises.lesson03 import check_midpoint_step
    check_midpoint_step(midpoint_step)        # shows PASSED / FAILED with what went wrong

==================================  ===================================================================
module                              checks
==================================  ===================================================================
:mod:`~tutorlib.exercises.core`     :func:`check` (the generic check), :class:`CheckResult`,
                                    :class:`Mistake`, :class:`Hint`: the machinery every check uses
:mod:`.lesson00`                    energy distance, MMD
:mod:`.lesson01`                    forward noising, one DDIM step
:mod:`.lesson02`                    exact divergence, Hutchinson's estimator
:mod:`.lesson03`                    Euler and midpoint steps, the linear and polynomial path targets
:mod:`.lesson04`                    x_1-prediction to velocity, the equivalent sigma, the linear path's time
:mod:`.lesson05`                    minibatch OT, the entropic plan of two points, OT with a class penalty
:mod:`.lesson06`                    the noise-end velocity, the predicted endpoint, the backward coupling
:mod:`.lesson07`                    an RK3 step, the minimax time grid, MeanFlow's target in the paper's time
:mod:`.lesson08`                    the guided velocity, the implicit classifier's gradient, cosine guidance
:mod:`.lesson09`                    label dropout, CFG in one pass, CFG-Zero* with zero-init
:mod:`.lesson10`                    the uniform source's posterior, the masked bound, the simplex posterior
:mod:`.lessonA`                     a guided jump of an average velocity, OT within classes on images
:mod:`.lessonB`                     the latent normalisation, the latent CFM loss with a frozen encoder,
                                    sampling in the latent then decoding
:mod:`.lessonC`                     the torus's geodesic path, the sphere's exponential-map Euler step
:mod:`.lessonD`                     an additive coupling, the affine coupling's inverse, bits per dimension
==================================  ===================================================================

A lesson's own one-off checks call :func:`check` directly with a reference, an input maker and,
where they are known, the likely mistakes. See CONTRIBUTING.md, "Exercises", for what a check must do.
"""

from tutorlib.exercises.core import CheckResult, Hint, Mistake, check

__all__ = ["CheckResult", "Hint", "Mistake", "check"]
