# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Neural ODEs and CNFs
#
# **Learning goals**
# - derive and use the instantaneous change of variables, $\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v_t(x_t)$,
#   to compute exact log-likelihoods of a flow by solving one augmented ODE;
# - compute a divergence exactly with autograd, estimate it with Hutchinson's trick, and measure
#   the estimator's variance for Gaussian and Rademacher probes;
# - train a continuous normalising flow (CNF) by maximum likelihood on 2D data, and report an
#   honest held-out negative log-likelihood against the data's true entropy;
# - measure what simulating the ODE inside every training step costs, against one flow-matching step.
#
# **Prerequisites:** lesson 00 (notation, toy data, metrics); the idea of an ODE solver
# (Euler's method). Lesson 01 helps but is not needed.
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU busy with other work, load average 3.4): CPU standard ≈ 1.6 min · GPU standard: not measured yet · smoke ≈ 24 s. The last cell prints this run's time.
#
# **Loads:** nothing. **Trains:** a maximum-likelihood CNF on eight Gaussians (a small MLP; the
# slow part of the lesson, on purpose) and, for the timing comparison, a few flow-matching steps
# of the same network.

# %% [markdown]
# ## Setup
#
# The usual three calls (lesson 00), plus the modules this lesson uses. `likelihood` holds the
# divergences and the log-likelihood solver; `solvers` integrates ODEs.

# %%
import math
import time

import torch

from tutorlib import data, likelihood, losses, metrics, models, paths, plotting, solvers, train
from tutorlib.claims import claim
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lesson02 import check_divergence_exact, check_hutchinson

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")

# %% [markdown]
# ## 1. The instantaneous change of variables
#
# *If samples move along an ODE, how does their density change?*
#
# A flow generates by integrating $\frac{dx_t}{dt} = v_t(x_t)$ from noise $x_0 \sim p_0 = \mathcal N(0, I)$
# at $t = 0$ to data $x_1$ at $t = 1$. The densities $p_t$ of $x_t$ obey the continuity equation
# $\partial_t p_t + \nabla\cdot(p_t v_t) = 0$ (probability mass is neither created nor destroyed).
# Expanding the divergence and following one particle,
# $\frac{d}{dt}\log p_t(x_t) = \partial_t \log p_t + \nabla \log p_t \cdot v_t$, gives the **instantaneous change of variables**
#
# $$\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v_t(x_t), \qquad
# \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v_t(x_t)\,dt .$$
#
# Where the field spreads out (positive divergence) the density falls; where it converges, the
# density rises. To evaluate $\log p_1$ at a data point we run the ODE *backwards* from $x_1$ to
# find the noise $x_0$ it came from, and accumulate the divergence on the way: an **augmented ODE**
# on the state $[x_t, a_t]$ with $\frac{d}{dt}[x_t, a_t] = [v_t(x_t), \nabla\cdot v_t(x_t)]$, started at
# $[x_1, 0]$ at $t = 1$; then $\log p_1(x_1) = \log p_0(x_0) + a_0$.
#
# **From scratch.** A flow with a known answer: the straight-line path from $\mathcal N(0, I)$ to
# $\mathcal N(\mu, s^2 I)$, $x_t = (1 + (s - 1)t)\,x_0 + t\mu$. Its velocity as a function of $x_t$ is
# affine, $v_t(x) = \frac{(s-1)(x - t\mu)}{1 + (s-1)t} + \mu$, with divergence
# $\frac{D(s-1)}{1 + (s-1)t}$, and $p_1 = \mathcal N(\mu, s^2 I)$ exactly. Below, Euler's method on the
# augmented state, in plain PyTorch (float64, on the CPU).

# %%
mu, s = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5  # the target N(mu, s^2 I)


def affine_velocity(x, t):
    """v_t(x) of the straight path N(0, I) -> N(mu, s^2 I); x (B, 2), t (B,) -> (B, 2)."""
    t = t[:, None]  # (B, 1)
    return (s - 1) * (x - t * mu) / (1 + (s - 1) * t) + mu


def affine_divergence(x, t):
    """Its divergence, the trace of the Jacobian (s - 1) / (1 + (s - 1) t) I: (B,)."""
    return x.shape[1] * (s - 1) / (1 + (s - 1) * t)


def euler_log_prob(velocity, divergence, x_1, steps):
    """log p_1(x_1): Euler on [x_t, a_t] from t = 1 (x_1, 0) down to t = 0."""
    h = 1.0 / steps
    x, a = x_1, torch.zeros(x_1.shape[0], dtype=x_1.dtype)  # (B, 2), (B,)
    for k in range(steps):
        t = torch.full((x.shape[0],), 1.0 - k * h, dtype=x.dtype)  # (B,)
        x, a = x - h * velocity(x, t), a - h * divergence(x, t)  # one step back in time
    log_p0 = -0.5 * x.square().sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)  # log N(x_0; 0, I)
    return log_p0 + a


x_1 = mu + s * torch.randn(6, 2, generator=gen, dtype=torch.float64)  # (6, 2) samples of p_1
analytic = (-0.5 * (x_1 - mu).square().sum(1) / s**2 - 2 * math.log(s) - math.log(2 * math.pi))  # log N(x_1; mu, s^2 I)
ours = euler_log_prob(affine_velocity, affine_divergence, x_1, steps=1000)
print("analytic       ", analytic.numpy().round(4))
print("our Euler      ", ours.numpy().round(4), f"  largest error {(ours - analytic).abs().max():.1e}")

# %% [markdown]
# The library's `likelihood.log_prob` integrates the same augmented ODE with any solver of
# `tutorlib.solvers` and computes the divergence by autograd (section 2), so it needs only the
# velocity. With the same Euler grid it must agree with our loop to rounding; with the adaptive
# Dormand-Prince solver (`dopri5`) it must agree with the closed form to its tolerance. It returns a
# `LikelihoodOutput` dataclass: `.log_prob`, `.x_0` (the noise the point came from), `.nfe`, ...

# %%
lib_euler = likelihood.log_prob(affine_velocity, x_1, method="euler", steps=1000)
lib_dopri = likelihood.log_prob(affine_velocity, x_1, method="dopri5", atol=1e-8, rtol=1e-8)
torch.testing.assert_close(lib_euler.log_prob, ours, atol=1e-9, rtol=1e-9)  # same algorithm, same numbers
torch.testing.assert_close(ours, analytic, atol=5e-3, rtol=0)  # Euler: error O(1 / steps)
torch.testing.assert_close(lib_dopri.log_prob, analytic, atol=1e-6, rtol=0)  # adaptive: to its tolerance
print(f"library Euler vs ours: {(lib_euler.log_prob - ours).abs().max():.1e};  "
      f"dopri5 vs analytic: {(lib_dopri.log_prob - analytic).abs().max():.1e} with {lib_dopri.nfe} evaluations")

# %% [markdown]
# ## 2. Divergences: exact, or estimated by Hutchinson's trick
#
# *The divergence is the trace of the Jacobian. What does it cost, and can we cheapen it?*
#
# $\nabla\cdot v(x) = \operatorname{tr}\frac{\partial v}{\partial x} = \sum_i \frac{\partial v_i}{\partial x_i}$.
# Autograd gives one row of the Jacobian per backward pass, so the exact trace costs $D$ passes:
# fine in 2D, hopeless for a $28 \times 28$ image. **Hutchinson's estimator** replaces the trace by a
# random quadratic form: for any probe $\varepsilon$ with $\mathbb E[\varepsilon\varepsilon^\top] = I$,
#
# $$\mathbb E_\varepsilon\big[\varepsilon^\top J \varepsilon\big]
# = \operatorname{tr}\big(J\,\mathbb E[\varepsilon\varepsilon^\top]\big) = \operatorname{tr} J ,$$
#
# and $\varepsilon^\top J$ is a single vector-Jacobian product: one backward pass whatever $D$. FFJORD
# trains CNFs this way. The price is variance. With $S = (J + J^\top)/2$, a Gaussian probe has
# per-probe variance $2\lVert S\rVert_F^2$; a Rademacher probe ($\pm 1$ entries) has
# $2\big(\lVert S\rVert_F^2 - \sum_i J_{ii}^2\big)$: it never errs on the diagonal, because $\varepsilon_i^2 = 1$.
#
# Let us measure both on a small random network, a 16-dimensional `TimeMLP` (in 2D the diagonal
# would be most of the Jacobian and the comparison one-sided). The full Jacobian, from
# `torch.autograd.functional.jacobian`, gives the exact trace and the theoretical variances.

# %%
D_h = 16  # dimension of the demo field (a lesson constant, not a run size)
field = models.TimeMLP(dim=D_h, hidden=P.hidden_2d // 2, depth=P.depth_2d).double().eval()
x_h = torch.randn(4, D_h, generator=gen, dtype=torch.float64)  # (4, D) four evaluation points
t_h = torch.rand(4, generator=gen, dtype=torch.float64)  # (4,)

exact = likelihood.divergence_exact(field, x_h, t_h).divergence  # (4,) D backward passes
J = torch.autograd.functional.jacobian(lambda x: field(x, t_h).sum(0), x_h).permute(1, 0, 2)  # (4, D, D)
torch.testing.assert_close(exact, J.diagonal(dim1=1, dim2=2).sum(1))  # the divergence is the trace
S = 0.5 * (J + J.transpose(1, 2))  # (4, D, D) symmetric part
var_theory = {"gaussian": 2 * S.square().sum((1, 2)),
              "rademacher": 2 * (S.square().sum((1, 2)) - J.diagonal(dim1=1, dim2=2).square().sum(1))}

n_probes = 5 * P.n_eval_2d  # probes per point
x_rep, t_rep = x_h.repeat(n_probes, 1), t_h.repeat(n_probes)  # (n_probes * 4, D): row r is point r % 4
eps_g = torch.randn(x_rep.shape, generator=gen, dtype=torch.float64)  # Gaussian probes
probes = {"gaussian": eps_g, "rademacher": torch.sign(torch.randn(x_rep.shape, generator=gen, dtype=torch.float64))}
estimates = {name: likelihood.divergence_hutchinson(field, x_rep, t_rep, eps).divergence.reshape(n_probes, 4)
             for name, eps in probes.items()}  # one probe per row: (n_probes, 4) single-probe estimates

print(f"{n_probes} single-probe estimates per point")
print(f"{'point':>5} {'exact':>9} | {'mean G':>9} {'mean R':>9} | "
      f"{'var G':>8} {'theory':>8} | {'var R':>8} {'theory':>8}")
for b in range(4):
    row = [estimates[k][:, b] for k in ("gaussian", "rademacher")]
    print(f"{b:>5} {exact[b]:9.4f} | {row[0].mean():9.4f} {row[1].mean():9.4f} | "
          f"{row[0].var():8.4f} {var_theory['gaussian'][b]:8.4f} | "
          f"{row[1].var():8.4f} {var_theory['rademacher'][b]:8.4f}")

for name, est in estimates.items():
    se = est.std(0) / math.sqrt(n_probes)  # (4,)
    claim(f"{name} probes: largest |mean - exact| in standard errors", float(((est.mean(0) - exact).abs() / se).max()),
          at_most=5.0)
    ratio = est.var(0) / var_theory[name]
    claim(f"{name} probes: variance / theory, farthest from 1", float(ratio.log().abs().max().exp()),
          at_most={"standard": 1.25, "smoke": 1.6})
var_ratio = estimates["rademacher"].var(0) / estimates["gaussian"].var(0)  # (4,)
print("variance ratio rademacher / gaussian per point:", var_ratio.numpy().round(3))
claim("Rademacher / Gaussian probe variance, largest over the points", float(var_ratio.max()), at_most=1.0)

# %% [markdown]
# Both means sit on the exact divergence (unbiased); the per-probe variances match the formulas
# (claimed within a factor of 1.25), and the Rademacher column is the smaller one at every point. The printed ratio
# is close to one here because most of this random Jacobian lies off the diagonal; the more of $J$
# sits on its diagonal, the more Rademacher probes gain.
# Averaging $k$ probes divides the variance by $k$: the standard deviation of the estimate falls
# like $1/\sqrt k$, so halving the error costs four times the passes.

# %%
ks = [2**i for i in range(7) if 2**i <= n_probes // 20]  # probes averaged per estimate
curves = {}
for name, est in estimates.items():
    std_emp = [est[: (n_probes // k) * k].reshape(n_probes // k, k, 4).mean(1).std(0).mean().item() for k in ks]
    curves[f"{name} (measured)"] = (ks, std_emp)
    curves[f"{name} (theory)"] = (ks, [var_theory[name].sqrt().mean().item() / math.sqrt(k) for k in ks])
plotting.metric_curves(curves, "probes averaged per estimate", "std of the divergence estimate",
                       log_y=True, title="Hutchinson's estimator: error against probes")

# %% [markdown]
# Measured and predicted lines coincide, parallel with slope $-1/2$ in log-log; Rademacher probes
# buy the same accuracy with fewer passes. In the 2D CNF below we can afford the exact divergence;
# in high dimension the estimator is what makes CNFs possible at all.

# %% [markdown]
# ## 3. A maximum-likelihood CNF on eight Gaussians
#
# *Can we fit a velocity field by making the data likely?*
#
# A CNF is a neural velocity field $v_\theta(x, t)$ (here the course's `TimeMLP`) whose flow carries
# $\mathcal N(0, I)$ to the data. Section 1 gives its exact log-likelihood, so we can train it the
# classical way, by **maximum likelihood**:
#
# $$\mathcal L(\theta) = -\mathbb E_{x_1 \sim p_\text{data}}\big[\log p_1^\theta(x_1)\big]
# = -\mathbb E\Big[\log p_0(x_0) - \int_0^1 \nabla\cdot v_\theta(x_t, t)\,dt\Big].$$
#
# Every loss evaluation *solves the augmented ODE* and back-propagates through the solver's steps
# (`enable_grad=True`; the divergence is itself a derivative, so this is a second derivative). We
# use a fixed-step solver, RK4 with 4 steps: 16 evaluations of $v_\theta$, each with $D = 2$ extra
# autograd passes for the exact divergence. We train on `eight_gaussians`, a mixture whose density we
# know exactly (radius 2.5, eight equally spaced angles from 0, standard deviation 0.2), so we can later
# compare the model's likelihood with the data's own.
#
# **A trap, and a cheap cure.** A fixed-step "likelihood" is not exactly a density: one step adds
# $h\,\nabla\cdot v$ where the exact change of volume of that step is $\log\lvert\det(I + hJ)\rvert$. If the
# solver visits the same times in every training step, a flexible network can learn a field that
# behaves differently between those times (the `TimeMLP`'s sinusoidal time features oscillate far
# faster than a quarter step) and whose *discretised* likelihood is excellent while its true one is
# poor: the training NLL then sinks below the entropy of the data, which no density can do. The cure
# used here: give the solver a **new random clock** every step. For $\tau(s) = s + c\,s(1 - s)$ with
# $\lvert c\rvert < 1$ (monotone, $\tau(0) = 0$, $\tau(1) = 1$), the field $\tau'(s)\,v(x, \tau(s))$ in the time $s$
# has exactly the same flow map and the same divergence integral (substitute $t = \tau(s)$), so the
# model and its likelihood are unchanged, but the solver's nodes land at new times $t$ each step and
# there is no fixed grid to exploit. The assert below checks the "same likelihood" claim with the
# adaptive solver.

# %%
TRAIN_SOLVER = dict(method="rk4", steps=4)  # the fixed-step solver inside the loss
cnf_batch = P.batch_2d // 2
cnf = models.TimeMLP.from_profile(P).to(device)
print(f"TimeMLP with {models.count_parameters(cnf):,} parameters; batch {cnf_batch}")


def time_warped(velocity, c):
    """The same flow on the clock t = tau(s) = s + c s (1 - s): dx/ds = tau'(s) v(x, tau(s))."""
    def warped(x, s):
        tau = s + c * s * (1 - s)  # (B,)
        return (1 + c * (1 - 2 * s))[:, None] * velocity(x, tau)  # (B, 2): tau'(s) v(x, tau)
    return warped


x_check = data.eight_gaussians(8, generator=gen, device=device)
tight = dict(method="dopri5", atol=1e-7, rtol=1e-7)
torch.testing.assert_close(likelihood.log_prob(time_warped(cnf, 0.4), x_check, **tight).log_prob,
                           likelihood.log_prob(cnf, x_check, **tight).log_prob, atol=1e-4, rtol=0)  # same likelihood


def nll_loss(model, x_1):
    """-mean log p_1(x_1) through the solver (maximum likelihood), on a random clock."""
    c = torch.rand((), generator=gen).item() - 0.5  # c in [-0.5, 0.5): fresh solver nodes each step
    return -likelihood.log_prob(time_warped(model, c), x_1, **TRAIN_SOLVER, enable_grad=True).log_prob.mean()


def data_batches(step):
    return data.eight_gaussians(cnf_batch, generator=gen, device=device)  # (batch, 2)


cnf_cfg = train.TrainConfig.from_profile(P).replace(steps=P.steps_2d // 10, lr=2e-3, desc="CNF, max. likelihood")
cnf_hist = train.train(cnf, nll_loss, data_batches, cnf_cfg)
cnf_model = cnf_hist.ema_model
print(f"{cnf_hist.describe()} (the loss is the training NLL, in nats)")
plotting.loss_curve(cnf_hist.steps, cnf_hist.losses, window=10, log_y=False, title="CNF training: NLL (nats)")

# %% [markdown]
# The negative log-likelihood falls fast at first, then slowly, towards the best value any model can
# reach, the entropy of the data (section 4 computes it). Note the seconds per step the cell prints:
# section 5 is about them.
#
# ## 4. Samples, density and an honest likelihood
#
# *Does the flow produce the data, and how likely does it find new points?*
#
# To sample, integrate the learned field forwards from noise, $x_0 \to x_1$, with `ode_solve`
# (no divergence needed). We use RK4 with four times the training steps and keep the trajectory,
# to watch $p_t$ move from the Gaussian to the eight modes.

# %%
means = 2.5 * torch.stack([torch.cos(2 * math.pi * torch.arange(8) / 8),
                           torch.sin(2 * math.pi * torch.arange(8) / 8)], 1).to(device)  # (8, 2) mixture means
std_true = 0.2
x_test = data.eight_gaussians(P.n_eval_2d, generator=gen, device=device)  # held out: never trained on
x_0 = data.gaussian(P.n_eval_2d, generator=gen, device=device)  # (N, 2) noise
sample_steps = 4 * TRAIN_SOLVER["steps"]
sol = solvers.ode_solve(cnf_model, x_0, method=TRAIN_SOLVER["method"], steps=sample_steps, return_trajectory=True)
floor = metrics.noise_floor(data.eight_gaussians, P.n_eval_2d, generator=gen)
ed = metrics.energy_distance(sol.x, x_test).item()
print(f"energy distance to held-out data {ed:.4f} = {floor.ratio(ed):.1f} x the noise floor ({floor.mean:.4f}); "
      f"{sol.nfe} evaluations per sample")
near = {name: (torch.cdist(x, means).min(1).values < 3 * std_true).float().mean().item()
        for name, x in (("CNF samples", sol.x), ("held-out data", x_test))}
print("fraction within 3 std of a mode:", {k: round(v, 3) for k, v in near.items()})
plotting.time_slider(plotting.trajectory_frames(sol.trajectory, sol.times, n_frames=sample_steps + 1),
                     data=x_test, title="CNF samples: p_t from noise (t = 0) to data (t = 1)")

# %% [markdown]
# Press play: the Gaussian splits into eight lumps that settle on the modes (grey). The cell prints
# the fraction of points within three standard deviations of a mode: for the data nearly all of them,
# for the CNF fewer, because a smooth flow that tears one Gaussian into eight pieces leaves some points
# on the bridges between modes.
#
# The model's density comes from `log_prob` on a grid, now with the adaptive `dopri5` solver, whose
# error control covers the divergence integral. Next to it, the true mixture density
# (`data.gmm_log_prob`). A density must integrate to one: the cell adds up $p$ over the plotted
# square as a check.

# %%
def cnf_log_prob(points):
    return likelihood.log_prob(cnf_model, points, method="dopri5", atol=1e-4, rtol=1e-4).log_prob


fig_model = plotting.density_from_log_prob(cnf_log_prob, device=device, title="CNF density p_1(x)")
fig_true = plotting.density_from_log_prob(lambda pts: data.gmm_log_prob(pts, means, std_true),
                                          device=device, title="true density of eight_gaussians")
mass = {}
for name, fig in (("CNF", fig_model), ("true", fig_true)):
    cell = (fig.data[0].x[1] - fig.data[0].x[0]) ** 2  # area of one grid cell
    mass[name] = fig.data[0].z.sum() * cell
    print(f"{name:5s} density: mass on the plotted square {mass[name]:.3f}, peak density {fig.data[0].z.max():.3f}")
claim("the CNF density's mass on the plotted square", mass["CNF"], at_least={"standard": 0.85, "smoke": 0.5},
      at_most={"standard": 1.05, "smoke": 1.3})
fig_model

# %%
fig_true

# %% [markdown]
# The CNF puts its mass on the eight modes and, like the true density, integrates to about one on the
# square (the cell prints both masses). The differences are in the details: the heights and shapes of
# the individual modes (compare the printed peak densities) and a faint haze between them, the same
# bridges the samples showed.
#
# **An honest likelihood.** The held-out negative log-likelihood, in nats per point, is the number to
# report, computed with the adaptive solver at a tight tolerance, never with the coarse training
# solver alone (section 3's trap). Two references frame the number:
# the best single Gaussian (mean and covariance fitted to training data) and the data distribution
# itself. Because $\mathbb E_{p}[-\log q] = H(p) + \mathrm{KL}(p\,\Vert\,q) \ge H(p)$, no model can beat
# the true density's NLL (the entropy of the data) except by sampling noise; the gap is the model's KL.

# %%
ev = likelihood.log_prob(cnf_model, x_test, method="dopri5", atol=1e-5, rtol=1e-5)
ev_train_solver = likelihood.log_prob(cnf_model, x_test, **TRAIN_SOLVER)
lp_true = data.gmm_log_prob(x_test, means, std_true)  # (N,) exact log-density of the data
x_fit = data.eight_gaussians(P.n_eval_2d, generator=gen, device=device)
gauss = torch.distributions.MultivariateNormal(x_fit.mean(0), torch.cov(x_fit.T))
n = x_test.shape[0]
nll = {"best single Gaussian": -gauss.log_prob(x_test),
       "CNF (dopri5, tol 1e-5)": -ev.log_prob,
       f"CNF (training solver, {TRAIN_SOLVER['method']} x {TRAIN_SOLVER['steps']})": -ev_train_solver.log_prob,
       "true density (entropy)": -lp_true}
print(f"held-out NLL on {n} points, nats (± standard error):")
for name, v in nll.items():
    print(f"  {name:34s} {v.mean():7.3f} ± {v.std() / math.sqrt(n):.3f}")
kl = lp_true - ev.log_prob  # (N,) paired differences log p_data - log p_CNF
print(f"KL(data || CNF) ≈ {kl.mean():.3f} ± {kl.std() / math.sqrt(n):.3f} nats;  "
      f"bits per dim {likelihood.bits_per_dim(ev.log_prob, 2).mean():.3f};  dopri5 used {ev.nfe} evaluations")
claim("KL(data || CNF) in standard errors (below -5: a model beat the true density, the solver exploited)",
      float(kl.mean() / (kl.std() / math.sqrt(n))), at_least=-5.0)
claim("held-out NLL: CNF minus the best single Gaussian (nats)",
      float(nll["CNF (dopri5, tol 1e-5)"].mean() - nll["best single Gaussian"].mean()), at_most={"standard": 0.0})
claim("|training solver NLL - dopri5 NLL| (nats)", float((ev_train_solver.log_prob - ev.log_prob).mean().abs()),
      at_most={"standard": 0.2, "smoke": 1.0})

# %% [markdown]
# The CNF is far better than the best Gaussian and does not beat the entropy (both claimed); the
# printed KL is what is left to win. The training solver's NLL agrees with the adaptive one (the claim
# checks that they are within 0.2 nats): the random clock kept the coarse solver from being exploited.
#
# Hutchinson's estimator plugs into the same call (`divergence="hutchinson"`); since the trajectory
# does not depend on the probes, the estimated log-likelihood stays unbiased, at the price of
# per-point noise: the printed error standard deviation, in nats, for a single probe. Averaging over
# a batch of points (or over several probes) is what makes it usable for training.

# %%
ev_h = likelihood.log_prob(cnf_model, x_test, **TRAIN_SOLVER, divergence="hutchinson", noise="rademacher",
                           generator=gen)
err_h = ev_h.log_prob - ev_train_solver.log_prob  # (N,) estimate minus exact, same solver
print(f"Hutchinson (1 Rademacher probe) NLL {-ev_h.log_prob.mean():.3f} "
      f"vs exact {-ev_train_solver.log_prob.mean():.3f}; per-point error std {err_h.std():.3f} nats, "
      f"mean error {err_h.mean():+.4f} ± {err_h.std() / math.sqrt(n):.4f}")
claim("Hutchinson NLL error in standard errors", float(err_h.mean().abs() / (err_h.std() / math.sqrt(n) + 1e-12)),
      at_most=5.0)

# %% [markdown]
# ## 5. What simulation costs during training
#
# *Why not train every flow like this?*
#
# Every maximum-likelihood step above solved an ODE: 16 evaluations of the network, each followed by
# two autograd passes for the divergence, and then a backward pass through all of it. **Flow matching**
# (lesson 03) trains the *same* network with one evaluation per step: sample a time $t$ and a point
# $x_t = t x_1 + (1 - t) x_0$ on the straight line between noise and data, and regress
# $v_\theta(x_t, t)$ onto $x_1 - x_0$ (`losses.cfm_loss` on `paths.CondOTPath`). No ODE is solved
# during training at all. Let us time it on the same architecture, batch size and machine.

# %%
fm_model = models.TimeMLP.from_profile(P).to(device)
path = paths.CondOTPath()


def fm_loss(model, x_1):
    x_0 = torch.randn(x_1.shape, generator=gen).to(device)  # (B, 2) noise
    t = torch.rand(x_1.shape[0], generator=gen).to(device)  # (B,)
    return losses.cfm_loss(model, path, x_0, x_1, t)


fm_hist = train.train(fm_model, fm_loss, data_batches,
                      cnf_cfg.replace(steps=P.steps_2d // 10, lr=1e-3, desc="flow matching (timing)"))
nfe_ml = likelihood.log_prob(cnf_model, x_test[:cnf_batch], **TRAIN_SOLVER).nfe
s_ml = cnf_hist.total_time_s / len(cnf_hist.losses)
s_fm = fm_hist.total_time_s / len(fm_hist.losses)
ratio = s_ml / s_fm
print(f"{'':24s} {'NFE/step':>9} {'s/step':>9}")
print(f"{'max-likelihood CNF':24s} {nfe_ml:>9d} {s_ml:>9.4f}   (+{x_test.shape[1]} autograd passes per NFE)")
print(f"{'flow matching':24s} {1:>9d} {s_fm:>9.4f}")
print(f"one maximum-likelihood step costs as much as {ratio:.0f} flow-matching steps")
print(f"in the CNF's {cnf_hist.total_time_s:.0f} s, flow matching would have taken about "
      f"{cnf_hist.total_time_s / s_fm:,.0f} steps (the CNF took {len(cnf_hist.losses)})")
claim("seconds per maximum-likelihood step / per flow-matching step", ratio, at_least={"standard": 10, "smoke": 3})

# %% [markdown]
# The printed ratio is the whole argument for lesson 03: for the price of one likelihood step, flow
# matching takes tens of steps (the claim checks more than ten), and the gap widens with the
# dimension (exact divergences cost $D$ passes) and with the stiffness of the learned field (an
# adaptive solver needs ever more steps as training sharpens the flow). Maximum likelihood remains
# the right way to *evaluate* a flow; lesson 03 trains without simulation and then reuses this
# lesson's `log_prob` to score the result.
#
# **Side note: discrete normalising flows strike back.** CNFs were invented to escape the
# architectural constraints of discrete normalising flows, which need invertible layers with cheap
# Jacobian determinants. *Normalizing Flows are Capable Generative Models* (TarFlow) argues the
# opposite direction can scale: a stack of autoregressive Transformer blocks on image patches,
# alternating direction, is an exactly invertible flow with a triangular Jacobian, trained by plain
# maximum likelihood in one pass (no ODE, no divergence estimator). With Gaussian noise augmentation,
# a denoising step after sampling and guidance, it reaches state-of-the-art image likelihoods and
# samples comparable to diffusion models. The likelihood objective is not the problem; simulation is.
# Appendix D compares a coupling flow with a CNF on the same data.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: the exact divergence
#
# Write `exact_divergence(f, x, t)` for a field `f(x, t)` with `x` of shape `(B, D)` and `t` of shape
# `(B,)`: return the `(B,)` tensor of $\sum_i \partial f_i / \partial x_i$ at each point. Make `x` a leaf
# that tracks gradients, evaluate `f` once, then take one `torch.autograd.grad` per output coordinate
# (`retain_graph=True`) and keep its diagonal entry. Each sample depends only on its own row, so the
# gradient of `v[:, i].sum()` holds every sample's row $i$ of the Jacobian.

# %%
def exact_divergence(f, x, t):
    # TODO: x = x.detach().requires_grad_(True); v = f(x, t); sum d v_i / d x_i over i
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def exact_divergence(f, x, t):
    x = x.detach().requires_grad_(True)
    v = f(x, t)  # (B, D)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # (B,)
    for i in range(x.shape[1]):
        (grad,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)  # (B, D): row i of each Jacobian
        div = div + grad[:, i]
    return div


# %%
check_divergence_exact(exact_divergence)

# %% [markdown]
# ### Exercise 2: Hutchinson's estimator
#
# Write `hutchinson_divergence(f, x, t, eps)` returning the single-probe estimate
# $\varepsilon^\top \frac{\partial f}{\partial x}\varepsilon$ per sample, shape `(B,)`, for a probe `eps` of
# shape `(B, D)`. Use one vector-Jacobian product: `torch.autograd.grad(v, x, grad_outputs=eps)` returns
# $\varepsilon^\top J$ for every sample at once. The check compares values with the library and then
# verifies, over many probes, that your estimator is unbiased.

# %%
def hutchinson_divergence(f, x, t, eps):
    # TODO: one vector-Jacobian product eps^T J, then the dot product with eps per sample
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def hutchinson_divergence(f, x, t, eps):
    x = x.detach().requires_grad_(True)
    v = f(x, t)  # (B, D)
    (vjp,) = torch.autograd.grad(v, x, grad_outputs=eps)  # (B, D): eps^T J
    return (vjp * eps).sum(1)  # (B,)


# %%
check_hutchinson(hutchinson_divergence)

# %% [markdown]
# **Going further.** (a) Train the CNF with `divergence="hutchinson"` in `nll_loss` and compare the
# learning curves. (b) Train on a fixed clock (`c = 0.0` in `nll_loss`) for twice the steps and compare
# the training solver's NLL with the `dopri5` NLL and the entropy bound of section 4: you may watch the
# trap of section 3 spring (the asserts of section 4 will say so).

# %% [markdown]
# ## Summary
#
# - Along a flow, $\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v_t(x_t)$: the exact log-likelihood of a CNF
#   is one backward solve of the augmented ODE $[x_t, a_t]$ (`likelihood.log_prob`, a `LikelihoodOutput`).
# - The divergence costs $D$ autograd passes exactly; Hutchinson's estimator costs one, unbiased, with
#   per-probe variance $2\lVert S\rVert_F^2$ (Gaussian) or less (Rademacher, no diagonal error).
# - Maximum likelihood trains a CNF directly, but every step simulates the ODE and differentiates
#   through it; report likelihoods with an adaptive solver, against the data's entropy when it is known.
# - Simulation makes each step many times dearer than a flow-matching step (section 5 prints the
#   ratio): the motivation for simulation-free training in lesson 03.
#
# ## References
#
# - *Neural Ordinary Differential Equations* (Chen, Rubanova, Bettencourt, Duvenaud, 2018): the
#   instantaneous change of variables and continuous normalising flows.
# - *FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models* (Grathwohl, Chen,
#   Bettencourt, Sutskever, Duvenaud, 2019): Hutchinson's estimator in CNFs.
# - *Normalizing Flows are Capable Generative Models* (Zhai et al., 2024): TarFlow, the side note.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
