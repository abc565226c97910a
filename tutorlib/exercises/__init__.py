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
:mod:`.lesson05`                    a minibatch optimal-transport coupling
:mod:`.lesson08`                    the classifier-free guidance combination
:mod:`.lesson09`                    label dropout, CFG in one pass, CFG-Zero* with zero-init
:mod:`.lessonB`                    the latent normalisation, the latent CFM loss with a frozen encoder,
                                    sampling in the latent then decoding (appendix B)
==================================  ===================================================================

A lesson's own one-off checks call :func:`check` directly with a reference, an input maker and,
where they are known, the likely mistakes. See CONTRIBUTING.md, "Exercises", for what a check must do.
"""

from tutorlib.exercises.core import CheckResult, Hint, Mistake, check

__all__ = ["CheckResult", "Hint", "Mistake", "check"]
