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
# # C · Flow matching on manifolds
#
# **Learning goals**
# - replace the straight line of flow matching by a **geodesic**: write the sphere's exponential and
#   logarithm maps and the geodesic conditional path with its velocity from scratch, and check the facts
#   Riemannian flow matching rests on (the velocity is tangent, its length is the geodesic distance);
# - sample exactly from densities that live on the sphere (a mixture of von Mises-Fisher laws, by Wood's
#   algorithm) and on the flat torus (a mixture of wrapped Gaussians), and measure sample quality with an
#   energy distance built on the manifold's own distance, against its noise floor;
# - train Riemannian flow matching on the sphere $S^2$ and the torus $T^2$ and sample with an Euler solver
#   that never leaves the manifold;
# - measure what an ordinary flow in $\mathbb R^3$ followed by a projection onto the sphere costs on the
#   same budget: where its trajectories go, and how good its samples are.
#
# **Prerequisites:** lesson 03 (the CFM loss, the linear path, Euler sampling); lesson 00 (energy distance
# and its noise floor). No differential geometry is assumed: the section that needs it introduces it.
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU): CPU standard ≈ 57 s · GPU standard: not measured yet · smoke ≈ 17 s. The last cell prints this run's time.
#
# **Loads:** nothing. **Trains:** three small MLP velocity fields for `ManifoldConfig.from_profile(P).steps`
# steps each (1500 in the standard profile): a Riemannian one on the sphere, an ordinary (Euclidean) one on the
# same sphere data in $\mathbb R^3$, and a Riemannian one on the torus.

# %% [markdown]
# ## Setup

# %%
import functools
import math
import time

import plotly.graph_objects as go
import torch

from tutorlib import metrics, plotting
from tutorlib.claims import claim
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lessonC import check_sphere_exp_step, check_torus_path
from tutorlib.losses import cfm_loss
from tutorlib.manifolds import (ManifoldConfig, Sphere, TangentVelocity, Torus, VonMisesFisherMixture,
                                WrappedGaussianMixture, energy_distance, manifold_euler, rfm_loss, sample_vmf,
                                vmf_mean_resultant_length, wrap)
from tutorlib.models import TimeMLP
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve
from tutorlib.train import TrainConfig, train

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")

C = ManifoldConfig.from_profile(P)  # the sizes of this appendix, from the profile
cfg = TrainConfig.from_profile(P).replace(steps=C.steps, progress=False)
print(f"{C.steps} steps at batch {C.batch} per model; {C.n_eval} samples x {C.repeats} draws per energy distance; "
      f"{C.sample_steps} Euler steps per sample ({C.few_steps} for the few-step comparison)")

# %% [markdown]
# ## 1. What replaces the straight line?
#
# *Flow matching moves noise to data along $x_t = (1 - t)x_0 + t x_1$ with velocity $x_1 - x_0$. On a sphere
# neither the straight line nor the difference of two points stays on the sphere: what takes their place?*
#
# A **manifold** $\mathcal M$ is a space that looks flat near every point: the sphere
# $S^2 = \{x \in \mathbb R^3 : |x| = 1\}$, or the torus $T^2$ of two angles. At a point $x$ the velocities of
# curves through $x$ form the **tangent space** $T_x\mathcal M$; for the sphere it is the plane of vectors
# orthogonal to $x$, $\{v : \langle v, x \rangle = 0\}$. The shortest curves are the **geodesics** (great
# circles on the sphere), and two maps translate between points and tangent vectors:
#
# - the **exponential map** $\exp_x(v)$ walks from $x$ along the geodesic with initial velocity $v$ for unit
#   time, a distance $|v|$; on the sphere $\exp_x(v) = \cos(|v|)\, x + \sin(|v|)\, v / |v|$;
# - the **logarithm** $\log_x(y)$ is its inverse: the tangent vector at $x$ pointing towards $y$, of length the
#   geodesic distance $d(x, y)$; on the sphere $d(x, y) = \arccos\langle x, y \rangle$ and
#   $\log_x(y) = d(x, y)\, (y - \langle x, y\rangle x) / |y - \langle x, y\rangle x|$.
#
# In $\mathbb R^n$, $\exp_x(v) = x + v$ and $\log_x(y) = y - x$, and flow matching's path reads
# $x_t = \exp_{x_0}(t \log_{x_0}(x_1))$. *Flow Matching on General Geometries* (Chen and Lipman) keeps that
# form on any manifold: the conditional path runs along the geodesic from $x_0$ to $x_1$ at constant speed,
#
# $$x_t = \exp_{x_0}\big(t \log_{x_0} x_1\big), \qquad u_t(x_t \mid x_0, x_1) = \frac{d x_t}{dt}
# = \frac{\log_{x_t}(x_1)}{1 - t},$$
#
# $$|u_t| = d(x_0, x_1) .$$
#
# The velocity is a tangent vector at $x_t$ pointing to $x_1$, whose length is the remaining distance divided
# by the remaining time. The network $v_\theta(x, t)$ must output tangent vectors too, and is regressed on
# $u_t$ exactly as in lesson 03. On the sphere the path has the closed form
# $x_t = \cos(t\theta)\, x_0 + \sin(t\theta)\, v/\theta$ with $v = \log_{x_0} x_1$, $\theta = |v|$, whose time
# derivative is the velocity. In plain PyTorch:

# %%
def sphere_exp(x, v):
    """exp_x(v) on the unit sphere: walk |v| radians along the great circle through x in the direction v."""
    theta = v.norm(dim=-1, keepdim=True)  # (B, 1)
    return torch.cos(theta) * x + torch.sinc(theta / math.pi) * v  # sinc(theta / pi) = sin(theta) / theta, 1 at 0


def sphere_log(x, y):
    """log_x(y): the tangent vector at x pointing towards y, of length d(x, y)."""
    c = (x * y).sum(-1, keepdim=True)  # (B, 1) cos d(x, y)
    w = y - c * x  # (B, 3) the part of y orthogonal to x; |w| = sin d(x, y)
    s = w.norm(dim=-1, keepdim=True)  # (B, 1)
    theta = torch.atan2(s, c)  # (B, 1) d(x, y), accurate near 0 and pi where arccos is not
    return theta / s.clamp_min(1e-300) * w


def sphere_path(x_0, x_1, t):
    """The geodesic conditional path x_t = exp_{x_0}(t log_{x_0} x_1) and its velocity d x_t / dt."""
    v = sphere_log(x_0, x_1)  # (B, 3) tangent at x_0, |v| = d(x_0, x_1)
    theta, t = v.norm(dim=-1, keepdim=True), t[:, None]  # (B, 1) each
    x_t = sphere_exp(x_0, t * v)  # (B, 3)
    dx_t = -theta * torch.sin(t * theta) * x_0 + torch.cos(t * theta) * v  # d/dt [cos(t th) x_0 + sin(t th) v / th]
    return x_t, dx_t


S = Sphere(3)
n_check = 1000
x_a = S.proj(S.sample_uniform(n_check, generator=gen).double())  # (n, 3) in float64 for the checks
x_b = S.proj(S.sample_uniform(n_check, generator=gen).double())
t_c = torch.rand(n_check, generator=gen, dtype=torch.float64) * 0.98 + 0.01  # (n,) away from 0 and 1
x_t, dx_t = sphere_path(x_a, x_b, t_c)
lib = S.geodesic(x_a, x_b, t_c)
torch.testing.assert_close(sphere_log(x_a, x_b), S.log(x_a, x_b))
torch.testing.assert_close(sphere_exp(x_a, S.to_tangent(x_a, x_b)), S.exp(x_a, S.to_tangent(x_a, x_b)))
torch.testing.assert_close(x_t, lib.x_t)
torch.testing.assert_close(dx_t, lib.dx_t)
print("the from-scratch exp, log and geodesic path agree with tutorlib.manifolds.Sphere")

d_ab = torch.arccos((x_a * x_b).sum(-1))  # (n,) the geodesic distance, by its definition
h = 1e-6
fd = (sphere_path(x_a, x_b, t_c + h)[0] - sphere_path(x_a, x_b, t_c - h)[0]) / (2 * h)  # (n, 3) central difference
checks = {
    "|exp_x(log_x y) - y|": float((sphere_exp(x_a, sphere_log(x_a, x_b)) - x_b).norm(dim=-1).max()),
    "| |log_x y| - arccos<x, y> |": float((sphere_log(x_a, x_b).norm(dim=-1) - d_ab).abs().max()),
    "| |x_t| - 1 |": float((x_t.norm(dim=-1) - 1).abs().max()),
    "|<dx_t, x_t>| (tangent)": float((dx_t * x_t).sum(-1).abs().max()),
    "| |dx_t| - d(x_0, x_1) | (constant speed)": float((dx_t.norm(dim=-1) - d_ab).abs().max()),
    "|dx_t - log_{x_t}(x_1) / (1 - t)|": float((dx_t - sphere_log(x_t, x_b) / (1 - t_c)[:, None]).norm(dim=-1).max()),
    "|dx_t - finite difference|": float((dx_t - fd).norm(dim=-1).max()),
}
for name, err in checks.items():
    print(f"largest {name:45s} {err:.1e}")
claim("sphere: largest |dx_t - central finite difference of x_t|", checks["|dx_t - finite difference|"],
      at_most=1e-7)
claim("sphere: largest | |dx_t| - d(x_0, x_1) |", checks["| |dx_t| - d(x_0, x_1) | (constant speed)"], at_most=1e-10)
claim("sphere: largest |dx_t - log_{x_t}(x_1) / (1 - t)|", checks["|dx_t - log_{x_t}(x_1) / (1 - t)|"],
      at_most=1e-9)

# %% [markdown]
# The table checks, on 1000 random pairs in float64, every fact the method uses: $\exp$ undoes $\log$, the
# length of $\log_x y$ is $\arccos\langle x, y\rangle$, the path stays on the sphere, its velocity is tangent,
# has the constant length $d(x_0, x_1)$, equals $\log_{x_t}(x_1)/(1-t)$ and is the time derivative of the
# path (a central finite difference agrees to the accuracy a difference quotient can reach). The closed form
# for $dx_t$ matters in practice: $\log_{x_t}(x_1)/(1-t)$ is a ratio of two small numbers as $t \to 1$.
#
# On the **flat torus** $T^2 = [-\pi, \pi)^2$ with opposite sides glued, a point is a pair of angles, and
# geodesics are straight lines in the angles, taken the short way round each circle:
# $\exp_x(v) = \mathrm{wrap}(x + v)$, $\log_x(y) = \mathrm{wrap}(y - x)$, where $\mathrm{wrap}$ brings an angle
# into $(-\pi, \pi]$. Exercise 1 asks you to write its path. `tutorlib.manifolds.Torus` has it:

# %%
T = Torus(2)
x_0_demo = torch.tensor([[3.0, 0.0]])  # near the right edge of the square
x_1_demo = torch.tensor([[-3.0, 0.5]])  # near the left edge: 0.28 rad away across the seam, 6 rad the other way
s_demo = T.geodesic(x_0_demo, x_1_demo, torch.tensor([0.5]))
print(f"log_x0(x1) = {s_demo.dx_t.tolist()} (not x1 - x0 = {(x_1_demo - x_0_demo).tolist()}); "
      f"midpoint {s_demo.x_t.tolist()}, across the seam at pi; wrap(3 pi) = {float(wrap(torch.tensor(3 * math.pi))):.4f}")
claim("torus: the geodesic crosses the seam (|log| < pi in every angle)", bool((s_demo.dx_t.abs() < math.pi).all()))

# %% [markdown]
# ## 2. What data live on the sphere and the torus?
#
# *To know whether a model is right we want densities we can sample exactly and evaluate exactly.*
#
# **On the sphere: von Mises-Fisher laws.** The vMF law of mean direction $\mu$ and concentration $\kappa$ has
# density $p(x) = \frac{\kappa}{4\pi \sinh\kappa} e^{\kappa\langle\mu, x\rangle}$ with respect to area: the
# sphere's Gaussian, of angular spread about $1/\sqrt\kappa$. **Wood's algorithm** samples it exactly: draw the
# height $w = \langle\mu, x\rangle$ from its marginal density $\propto e^{\kappa w}$ on $[-1, 1]$, then a
# direction orthogonal to $\mu$ uniformly. On $S^2$ the marginal's CDF inverts in closed form,
# $w = 1 + \log\big(u + (1-u)e^{-2\kappa}\big)/\kappa$ for $u \sim U(0, 1)$, so no rejection step is needed
# (`tutorlib.manifolds.sample_vmf`). A closed form to test it against: the mean of a vMF sample is
# $A(\kappa)\mu$ with the **mean resultant length** $A(\kappa) = \coth\kappa - 1/\kappa$.
#
# Our data on the sphere is a mixture of five vMF components, two of them at the poles (opposite each other,
# which will matter in section 5).

# %%
n_vmf = 20_000
mu = torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64)
mu = mu / mu.norm()
print(f"{'kappa':>6} {'|mean| of the draws':>20} {'coth k - 1/k':>13}")
vmf_err = []
for kappa in (1.0, 5.0, 25.0, 100.0):
    draws = sample_vmf(mu.expand(n_vmf, 3), torch.tensor(kappa), generator=gen)  # (n, 3)
    r_bar, exact = float(draws.mean(0).norm()), float(vmf_mean_resultant_length(kappa))
    vmf_err.append(abs(r_bar - exact))
    print(f"{kappa:6.0f} {r_bar:20.4f} {exact:13.4f}")
claim("vMF sampler: largest |mean resultant length - (coth kappa - 1/kappa)|", max(vmf_err), at_most=0.01)

sphere_data = VonMisesFisherMixture(
    means=torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [-0.5, 0.8, 0.2], [0.3, -0.9, -0.3]]),
    kappas=torch.tensor([30.0, 30.0, 15.0, 50.0, 8.0]),
    weights=torch.tensor([1.0, 1.0, 1.5, 1.0, 1.0]),
)
# the density integrates to one: the midpoint rule in (cos theta, phi), 400 x 400 cells of equal area
m = 400
u_mid = (torch.arange(m, dtype=torch.float64) + 0.5) / m * 2 - 1  # cos theta
phi_mid = (torch.arange(m, dtype=torch.float64) + 0.5) / m * 2 * math.pi
U, PHI = torch.meshgrid(u_mid, phi_mid, indexing="ij")
grid = torch.stack([(1 - U**2).sqrt() * PHI.cos(), (1 - U**2).sqrt() * PHI.sin(), U], -1).reshape(-1, 3)
integral = float(sphere_data.log_prob(grid).exp().mean() * S.volume)
print(f"the mixture's density integrates to {integral:.6f} over the sphere (area {S.volume:.4f})")
claim("vMF mixture: |integral of the density - 1|", abs(integral - 1), at_most=1e-3)

# %% [markdown]
# The draws match the closed form at every concentration, and the mixture's density integrates to one.
# Below, the data drawn on the sphere, coloured by their exact log-density (drag to turn the sphere). Points
# behind the translucent surface show through it, fainter.

# %%
def sphere_surface(opacity=0.2):
    """A translucent unit sphere for the points to sit on."""
    th, ph = torch.meshgrid(torch.linspace(0, math.pi, 40), torch.linspace(0, 2 * math.pi, 60), indexing="ij")
    return go.Surface(x=th.sin() * ph.cos(), y=th.sin() * ph.sin(), z=th.cos(), opacity=opacity, showscale=False,
                      colorscale=[[0, "lightgrey"], [1, "lightgrey"]], hoverinfo="skip", name="S^2")


def sphere_figure(traces, title, height=520):
    """The sphere with `traces` (plotly 3D traces) on it; equal axes, the course's layout."""
    fig = go.Figure([sphere_surface(), *traces])
    fig.update_layout(scene=dict(aspectmode="cube", xaxis=dict(title="x", range=[-1.1, 1.1]),
                                 yaxis=dict(title="y", range=[-1.1, 1.1]), zaxis=dict(title="z", range=[-1.1, 1.1])),
                      margin=dict(l=0, r=40, t=50, b=0), legend=dict(x=0, y=0.95))
    return plotting.finish(fig, title=title, height=height, width=620)


def points_3d(x, name, **marker):
    x = x.detach().cpu()
    return go.Scatter3d(x=x[:, 0], y=x[:, 1], z=x[:, 2], mode="markers", name=name,
                        marker=dict(size=2, **marker))


x_show = sphere_data.sample(C.n_eval, generator=gen)  # (n, 3)
sphere_figure([points_3d(x_show, "data", color=sphere_data.log_prob(x_show).float(), colorscale="Viridis",
                         colorbar=dict(title="log p", len=0.6))],
              "Data on S^2: five von Mises-Fisher components (colour: exact log-density)")

# %% [markdown]
# **On the torus: wrapped Gaussians.** A wrapped Gaussian draws $z \sim \mathcal N(\mu, \sigma^2 I)$ in the
# plane and wraps it onto the torus, $x = \mathrm{wrap}(z)$. Its density sums the Gaussian over every copy of
# the point, $p(x) = \sum_{n \in \mathbb Z^2} \mathcal N(x + 2\pi n; \mu, \sigma^2 I)$, a sum that converges so
# fast that a few copies give it to double precision (`WrappedGaussianMixture` keeps enough of them).
# Our torus data is a mixture of four components, two of which sit on the square's edges: one at $(\pi, \pi)$,
# cut into four quarters by the corners, and one at $(0, \pi)$, cut in two by the top and bottom edges.
#
# We draw the torus as the **periodic square** $[-\pi, \pi]^2$ rather than as a donut in 3D: the flat torus's
# distances and areas are exactly the square's (only the gluing is extra), while a donut stretches the outer
# side and shrinks the inner one, so densities and distances drawn on it would be distorted. Keep in mind that
# the left and right edges are the same circle, and so are the top and bottom.

# %%
torus_data = WrappedGaussianMixture(
    means=torch.tensor([[math.pi, math.pi], [0.0, math.pi], [-1.2, 0.3], [1.5, -1.0]], dtype=torch.float64),
    stds=torch.tensor([0.35, 0.3, 0.3, 0.5]),
    weights=torch.tensor([1.0, 1.0, 1.5, 1.0]),
)
print("component centres (wrapped into (-pi, pi]):", [[round(v, 2) for v in row] for row in torus_data.means.tolist()])
m_t = 120
ang = (torch.arange(m_t, dtype=torch.float64) + 0.5) / m_t * 2 * math.pi - math.pi  # cell midpoints
torus_grid = torch.cartesian_prod(ang, ang)  # (m^2, 2): (theta_1, theta_2)
torus_density = torus_data.log_prob(torus_grid).exp()  # (m^2,)
torus_integral = float(torus_density.mean() * T.volume)
print(f"the mixture's density integrates to {torus_integral:.8f} over the torus (area 4 pi^2)")
claim("wrapped Gaussian mixture: |integral of the density - 1|", abs(torus_integral - 1), at_most=1e-6)


def torus_figure(samples, title, name="samples"):
    """The exact density on the periodic square [-pi, pi]^2 as a heatmap, with `samples` on top."""
    fig = go.Figure(go.Heatmap(x=ang, y=ang, z=torus_density.reshape(m_t, m_t).T, colorscale="Greys",
                               colorbar=dict(title="p"), hoverinfo="skip"))
    if samples is not None:
        s_np = samples.detach().cpu()
        fig.add_trace(go.Scattergl(x=s_np[:, 0], y=s_np[:, 1], mode="markers", name=name,
                                   marker=dict(size=3, color=plotting.SAMPLE_COLOR, opacity=0.6)))
    ticks = dict(range=[-math.pi, math.pi], tickvals=[-math.pi, 0, math.pi], ticktext=["-pi", "0", "pi"])
    fig.update_xaxes(title="theta_1", **ticks)
    fig.update_yaxes(title="theta_2", scaleanchor="x", scaleratio=1, **ticks)
    fig.update_layout(margin=dict(l=60, r=40, t=50, b=50), legend=dict(x=0, y=-0.15, orientation="h"))
    return plotting.finish(fig, title=title, height=520, width=560)


torus_figure(torus_data.sample(C.n_eval, generator=gen), "Data on T^2 (the periodic square): four wrapped Gaussians",
             name="data")

# %% [markdown]
# ## 3. How do we measure sample quality on a manifold?
#
# *Lesson 00's energy distance uses Euclidean distances. Which distance belongs on a sphere or a torus?*
#
# The energy distance $D^2(P, Q) = 2\,\mathbb E\, d(X, Y) - \mathbb E\, d(X, X') - \mathbb E\, d(Y, Y')$ works
# with any metric $d$ of **negative type**: then $D^2 \ge 0$, and it vanishes only for equal laws. The sphere's
# geodesic distance is one: by Crofton's formula, $d(x, y)/\pi$ is the chance that a uniformly random hemisphere
# contains exactly one of $x$ and $y$, which writes $d$ as an $L^1$ distance between indicator functions
# (`tests/test_manifolds.py` checks the formula). On the torus we use the sum of the two circles' geodesic
# distances, $\sum_k |\mathrm{wrap}(x_k - y_k)|$, a sum of such metrics. On the torus the choice matters
# most: two points at $\theta_1 = \pm(\pi - 0.1)$ are 0.2 apart, but a Euclidean distance in the square puts them
# $2\pi - 0.2$ apart. (On the sphere the chordal distance $|x - y|$ would also do; the geodesic one measures
# along the surface, in radians.)
#
# As in lesson 00, one number means little alone: we report it against its **noise floor**, the same distance
# between two independent draws of the data of the same size. Both are averaged over several draws; the floor,
# which needs no sampling, over four times as many. `tutorlib.metrics` computes both for any metric we hand it.

# %%
ed_sphere = functools.partial(energy_distance, S)  # (x, y) -> the geodesic energy distance
ed_torus = functools.partial(energy_distance, T)


def data_sampler(law):
    return lambda n, generator=None: law.sample(n, generator=generator, device=device)


# the floor costs no sampling: four times the draws pin its mean down (same n as every model's score)
floor_s = metrics.noise_floor(data_sampler(sphere_data), C.n_eval, ed_sphere, generator=gen, repeats=4 * C.repeats)
floor_t = metrics.noise_floor(data_sampler(torus_data), C.n_eval, ed_torus, generator=gen, repeats=4 * C.repeats)
uniform_s = metrics.model_score(functools.partial(S.sample_uniform, device=device), data_sampler(sphere_data),
                                C.n_eval, ed_sphere, generator=gen, repeats=C.repeats)
uniform_t = metrics.model_score(functools.partial(T.sample_uniform, device=device), data_sampler(torus_data),
                                C.n_eval, ed_torus, generator=gen, repeats=C.repeats)
print(f"sphere: noise floor {floor_s:.5f}; the uniform source scores {floor_s.ratio(uniform_s):.1f} x the floor")
print(f"torus:  noise floor {floor_t:.5f}; the uniform source scores {floor_t.ratio(uniform_t):.1f} x the floor")
claim("sphere: uniform source vs data, energy distance / noise floor", floor_s.ratio(uniform_s),
      at_least={"standard": 10.0, "smoke": 3.0})
claim("torus: uniform source vs data, energy distance / noise floor", floor_t.ratio(uniform_t),
      at_least={"standard": 5.0, "smoke": 2.5})

# %% [markdown]
# The uniform law, where every flow here starts, is far above the floor on both manifolds (the cell above
# prints by how much): a model that has learned nothing cannot hide. A perfect model scores about 1.

# %% [markdown]
# ## 4. Riemannian flow matching on the sphere
#
# *Train $v_\theta$ on geodesic paths from the uniform law to the vMF mixture: does it learn the data, and does
# everything stay on the sphere?*
#
# The recipe is lesson 03's with three changes. The source is the **uniform law on the sphere** (the manifold
# has no Gaussian to start from; uniform is its natural noise). The model reads the point $x \in \mathbb R^3$
# and its output is **projected onto the tangent plane**, $v \mapsto v - \langle v, x\rangle x$
# (`TangentVelocity`, around the course's `TimeMLP`). The loss regresses it on the geodesic velocity in the
# Riemannian norm (`rfm_loss`):
#
# $$\mathcal L(\theta) = \mathbb E_{t, x_0, x_1}\, \big|v_\theta(x_t, t) - u_t(x_t \mid x_0, x_1)\big|^2_{x_t} .$$
#
# Sampling integrates $dx/dt = v_\theta(x, t)$ with the **exponential-map Euler step**
# $x \leftarrow \exp_x(h\, v_\theta(x, t))$ (`manifold_euler`), which walks along the great circle instead of
# the tangent line, so every iterate is on the sphere (exercise 2 asks you to write it).

# %%
def fresh(module_fn, seed=1):
    """A new network whose initial weights depend only on `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return module_fn().to(device)


def manifold_batches(manifold, law, seed):
    """step -> (x_0, x_1, t): uniform source points, data points and times, from one seeded stream."""
    g = torch.Generator().manual_seed(seed)

    def sampler(step):
        x_0 = manifold.sample_uniform(C.batch, generator=g)  # (B, D)
        x_1 = law.sample(C.batch, generator=g)  # (B, D)
        t = torch.rand(C.batch, generator=g)  # (B,)
        return x_0.to(device), x_1.to(device), t.to(device)

    return sampler


hist_rfm = train(fresh(lambda: TangentVelocity.from_profile(P, S)), lambda model, b: rfm_loss(model, S, *b),
                 manifold_batches(S, sphere_data, seed=5), cfg)
rfm = hist_rfm.ema_model
print(f"Riemannian FM on S^2: {hist_rfm.describe()}")


def riemannian_sampler(model, manifold, steps):
    """(n, generator) -> (n, D): uniform points, then `steps` exponential-map Euler steps of `model`."""
    return lambda n, generator=None: manifold_euler(
        manifold, model, manifold.sample_uniform(n, generator=generator, device=device), steps=steps).x


score_rfm = metrics.model_score(riemannian_sampler(rfm, S, C.sample_steps), data_sampler(sphere_data), C.n_eval,
                                ed_sphere, generator=gen, repeats=C.repeats)
print(f"{C.sample_steps} exponential-map Euler steps: energy distance {score_rfm:.5f} = "
      f"{floor_s.ratio(score_rfm):.2f} x the noise floor")
claim(f"sphere, Riemannian FM, {C.sample_steps} Euler steps: energy distance / noise floor", floor_s.ratio(score_rfm),
      at_most={"standard": 2.0, "smoke": 4.0})

# tangency and staying on the sphere, along whole trajectories
x0_eval = S.sample_uniform(C.n_eval, generator=gen, device=device)  # (n, 3): the same start for both models
sol_rfm = manifold_euler(S, rfm, x0_eval, steps=C.sample_steps, return_trajectory=True)
x_seen, t_seen = sol_rfm.trajectory[:-1:10], sol_rfm.times[:-1:10]  # every tenth step along the trajectories
with torch.no_grad():
    v_seen = torch.stack([rfm(x, float(t)) for x, t in zip(x_seen, t_seen)])  # (10, n, 3)
tangency = float((v_seen * x_seen).sum(-1).abs().max() / v_seen.norm(dim=-1).max())
off_sphere_rfm = float(S.distance_to_manifold(sol_rfm.trajectory).max())
print(f"along {C.n_eval} trajectories: largest |<v, x>| / largest |v| = {tangency:.1e} (at every tenth step); "
      f"largest | |x| - 1 | = {off_sphere_rfm:.1e}")
claim("Riemannian FM: the velocity is tangent, largest |<v, x>| / largest |v|", tangency, at_most=1e-5)
claim("Riemannian FM: the samples stay on the sphere, largest | |x| - 1 | along the trajectories", off_sphere_rfm,
      at_most=1e-5)

# %%
sphere_figure([points_3d(sphere_data.sample(C.n_eval, generator=gen), "data", color="rgba(120,120,120,0.5)"),
               points_3d(sol_rfm.x, "Riemannian FM samples", color=plotting.SAMPLE_COLOR)],
              f"Riemannian FM on S^2: samples ({C.sample_steps} exponential-map Euler steps) and data")

# %% [markdown]
# The claims above hold in the cell that computes them: the samples score within a small factor of the noise
# floor, the field is tangent to float32 rounding (because the model projects its output, not because it
# learned to), and every iterate of every trajectory lies on the sphere to rounding (because each step is an
# exponential map followed by a renormalisation that only corrects rounding). Turn the figure to see the
# samples on all five components.

# %% [markdown]
# ## 5. What goes wrong with a Euclidean flow plus projection?
#
# *The sphere sits in $\mathbb R^3$. Why not train ordinary flow matching there, on the same pairs, and push
# the samples onto the sphere at the end?*
#
# Same source points, same data, same times, same network and initial weights, same number of steps; the only
# change is the path: the straight chord $x_t = (1-t)x_0 + t x_1$ through the inside of the ball, with velocity
# $x_1 - x_0$ (lesson 03's `CondOTPath` and `cfm_loss`). To sample, ordinary Euler steps in $\mathbb R^3$, and
# at the end the projection $x \mapsto x/|x|$.

# %%
hist_euc = train(fresh(lambda: TimeMLP.from_profile(P, dim=3)),
                 lambda model, b: cfm_loss(model, CondOTPath(), *b), manifold_batches(S, sphere_data, seed=5), cfg)
euc = hist_euc.ema_model
print(f"Euclidean FM in R^3: {hist_euc.describe()}")


def euclidean_sampler(model, steps, project=True):
    """(n, generator) -> (n, 3): uniform points on the sphere, `steps` Euler steps in R^3, then x / |x|."""
    def sample(n, generator=None):
        x = ode_solve(model, S.sample_uniform(n, generator=generator, device=device), steps=steps).x
        return S.proj(x) if project else x
    return sample


sol_euc = ode_solve(euc, x0_eval, steps=C.sample_steps, return_trajectory=True)
radius = sol_euc.trajectory.norm(dim=-1)  # (S + 1, n)
mid = C.sample_steps // 2
inside_mid = float((1 - radius[mid]).mean())
deepest = float((1 - radius).max())
end_off = S.distance_to_manifold(sol_euc.x)  # (n,) before the projection
print(f"Euclidean trajectories at t = 0.5: mean radius {float(radius[mid].mean()):.3f} (mean depth below the sphere "
      f"{inside_mid:.3f}); deepest point of any trajectory {deepest:.3f} below the sphere")
print(f"at t = 1, before the projection: | |x| - 1 | is {float(end_off.mean()):.4f} on average, "
      f"{float(end_off.max()):.4f} at most (Riemannian FM: {off_sphere_rfm:.1e})")
claim("Euclidean FM: mean depth of the trajectories below the sphere at t = 0.5", inside_mid,
      at_least={"standard": 0.15, "smoke": 0.1})
claim("Euclidean FM: largest | |x| - 1 | of the samples before the projection", float(end_off.max()),
      at_least=1e-3)

# %% [markdown]
# Mid-way the Euclidean trajectories run well inside the ball (the cell above prints how deep), and the
# samples end near the sphere but not on it. The straight chords cut through the ball by construction, so the
# network must learn a field on the whole ball, at points that are not on the manifold, where no data ever is.
# The chords of nearly opposite pairs pass near the centre, where paths from everywhere cross and the field must
# average directions that point every way: our data has mass at both poles, so that region is busy.
#
# How much does that cost in sample quality? The figure compares both models after each number of Euler
# steps, the Euclidean one after its projection.

# %%
nfes = sorted({1, 2, C.few_steps, 8, C.sample_steps})
ratio_rfm, ratio_euc = {}, {}
for k in nfes:
    ratio_rfm[k] = floor_s.ratio(score_rfm) if k == C.sample_steps else floor_s.ratio(metrics.model_score(
        riemannian_sampler(rfm, S, k), data_sampler(sphere_data), C.n_eval, ed_sphere, generator=gen,
        repeats=C.repeats))
    ratio_euc[k] = floor_s.ratio(metrics.model_score(euclidean_sampler(euc, k), data_sampler(sphere_data), C.n_eval,
                                                     ed_sphere, generator=gen, repeats=C.repeats))
print(f"{'Euler steps':>11} {'Riemannian FM':>14} {'Euclidean + projection':>23}   (energy distance / noise floor)")
for k in nfes:
    print(f"{k:11d} {ratio_rfm[k]:14.2f} {ratio_euc[k]:23.2f}")
claim(f"sphere, Euclidean FM + projection, {C.sample_steps} Euler steps: energy distance / noise floor",
      ratio_euc[C.sample_steps], at_most={"standard": 3.0, "smoke": 4.5})
for k in (C.few_steps, 8):
    claim(f"{k} Euler steps: energy distance of Euclidean + projection / Riemannian", ratio_euc[k] / ratio_rfm[k],
          at_least={"standard": 1.5})
plotting.metric_curves({"Riemannian FM (exp-map Euler)": (nfes, [ratio_rfm[k] for k in nfes]),
                        "Euclidean FM + projection": (nfes, [ratio_euc[k] for k in nfes])},
                       "Euler steps (NFE)", "energy distance / noise floor", floor=1.0, log_y=True,
                       title="Sphere: the same budget, geodesic vs straight paths")

# %% [markdown]
# With 100 steps both models come close to the noise floor, the Euclidean one once its samples are projected
# (the table prints both; the claim bounds the Euclidean one). With few steps the Euclidean flow falls far behind:
# the claims compare the two at 4 and 8 steps. The figure below shows where the difference comes from: the
# radius along the trajectories of both models (the band holds the middle 90 % of the Euclidean trajectories)
# and, in 3D, a few trajectories of each. The Euclidean trajectories dive into the ball and come back out, a
# curve in $\mathbb R^3$ that a few Euler steps cannot follow; the projection at the end puts the samples back
# on the sphere but not back where the flow would have taken them. The Riemannian trajectories curve only as
# the sphere does, and the exponential-map step follows that curvature exactly: what is left for Euler's
# method to resolve is how the flow turns *along* the sphere.

# %%
q_lo, q_hi = torch.quantile(radius.cpu(), torch.tensor([0.05, 0.95]), dim=1)  # (S + 1,) each
times = sol_euc.times.tolist()
fig = go.Figure([
    go.Scatter(x=times + times[::-1], y=q_hi.tolist() + q_lo.tolist()[::-1], fill="toself", line=dict(width=0),
               fillcolor="rgba(214, 39, 40, 0.15)", name="Euclidean: 5-95 % of trajectories", hoverinfo="skip"),
    go.Scatter(x=times, y=radius.mean(1).tolist(), name="Euclidean: mean radius", line=dict(color="#d62728")),
    go.Scatter(x=times, y=sol_rfm.trajectory.norm(dim=-1).mean(1).tolist(), name="Riemannian: mean radius",
               line=dict(color=plotting.SAMPLE_COLOR)),
])
fig.update_xaxes(title="t")
fig.update_yaxes(title="|x_t| (1 = on the sphere)")
fig.update_layout(legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"), margin=dict(t=90))
plotting.finish(fig, title="Distance from the centre along the trajectories", height=380, width=650, top=90)

# %%
n_lines = 30


def path_lines_3d(traj, name, color):
    """`n_lines` trajectories (S + 1, n, 3) as one 3D line trace, separated by gaps."""
    pts = traj[:, :n_lines].detach().cpu()  # (S + 1, k, 3)
    gap = torch.full((1, pts.shape[1], 3), float("nan"))
    seg = torch.cat([pts, gap]).transpose(0, 1).reshape(-1, 3)  # (k (S + 2), 3)
    return go.Scatter3d(x=seg[:, 0], y=seg[:, 1], z=seg[:, 2], mode="lines", name=name, line=dict(color=color, width=3))


sphere_figure([path_lines_3d(sol_rfm.trajectory, "Riemannian FM (on the sphere)", plotting.SAMPLE_COLOR),
               path_lines_3d(sol_euc.trajectory, "Euclidean FM (through the ball)", "#d62728")],
              f"{n_lines} trajectories of each model from the same start points")

# %% [markdown]
# ## 6. The flat torus
#
# *On the torus there is no ambient space to project from: a point is two angles. What does the model read,
# and what does it write?*
#
# A network that reads the raw angles would see $\theta = \pi - \epsilon$ and $\theta = -\pi + \epsilon$ as far
# apart, though they are neighbours, and its output would jump across the seam. `TangentVelocity` on a `Torus`
# reads the periodic features $(\cos\theta_1, \cos\theta_2, \sin\theta_1, \sin\theta_2)$ instead, so the field
# is continuous on the torus, and writes two angular velocities (every vector is tangent to the flat torus:
# nothing to project). The conditional paths are the wrapped straight lines of section 1, the solver's step is
# $\exp_x(hv) = \mathrm{wrap}(x + hv)$, and everything else is section 4's.

# %%
hist_tor = train(fresh(lambda: TangentVelocity.from_profile(P, T)), lambda model, b: rfm_loss(model, T, *b),
                 manifold_batches(T, torus_data, seed=7), cfg)
rfm_t = hist_tor.ema_model
print(f"Riemannian FM on T^2: {hist_tor.describe()}")
score_t = metrics.model_score(riemannian_sampler(rfm_t, T, C.sample_steps), data_sampler(torus_data), C.n_eval,
                              ed_torus, generator=gen, repeats=C.repeats)
score_t_few = metrics.model_score(riemannian_sampler(rfm_t, T, C.few_steps), data_sampler(torus_data), C.n_eval,
                                  ed_torus, generator=gen, repeats=C.repeats)
print(f"energy distance / noise floor: {floor_t.ratio(score_t):.2f} at {C.sample_steps} Euler steps, "
      f"{floor_t.ratio(score_t_few):.2f} at {C.few_steps}")
claim(f"torus, Riemannian FM, {C.sample_steps} Euler steps: energy distance / noise floor", floor_t.ratio(score_t),
      at_most={"standard": 2.0, "smoke": 3.0})

# the share of the samples that each component gets (by its exact posterior), against its weight
samples_t = manifold_euler(T, rfm_t, T.sample_uniform(4 * C.n_eval, generator=gen, device=device),
                             steps=C.sample_steps).x
owner = torus_data.component_log_probs(samples_t).argmax(-1)  # (4 n,) the most likely component
x_t_data = torus_data.sample(20 * C.n_eval, generator=gen)  # data cost no sampling: many, for exact-ish shares
owner_data = torus_data.component_log_probs(x_t_data).argmax(-1)
share = torch.bincount(owner, minlength=4).double() / owner.numel()
share_data = torch.bincount(owner_data, minlength=4).double() / owner_data.numel()
print("share of samples per component:", [round(v, 3) for v in share.tolist()])
print("share of data per component:   ", [round(v, 3) for v in share_data.tolist()])
print(f"the component in the corner, (pi, pi): {float(share[0]):.3f} of the samples, {float(share_data[0]):.3f} of the data")
claim("torus: largest |share of samples - share of data| over the four components",
      float((share - share_data).abs().max()), at_most={"standard": 0.04})

# %%
torus_figure(samples_t[: C.n_eval], f"Riemannian FM on T^2: samples ({C.sample_steps} Euler steps) over the density")

# %% [markdown]
# The samples score within a small factor of the noise floor, and each of the four components, the two cut by
# the square's edges included, receives about its share (the claim compares the shares of the samples with those
# of five times as many data points, classified by the same exact posterior). In the figure the blob in the corner is one component: its four
# quarters are glued together, and the flow moves mass across the seams as freely as anywhere else.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (a variant of section 1): the torus's geodesic path.** Write `torus_path(x_0, x_1, t)` returning
# `(x_t, dx_t)` for angles `x_0`, `x_1` of shape `(B, d)` in $(-\pi, \pi]$ and times `t` of shape `(B,)`: the
# geodesic conditional path $x_t = \exp_{x_0}(t \log_{x_0} x_1)$ of the flat torus and its velocity. Section 1
# wrote the sphere's; on the torus $\exp_x(v) = \mathrm{wrap}(x + v)$ and $\log_x(y) = \mathrm{wrap}(y - x)$, with
# $\mathrm{wrap}$ into $(-\pi, \pi]$. Write `wrap` yourself (`torch.remainder` helps, but mind its range). The check
# varies the batch, the number of angles and the times, and names the usual slips.

# %%
def torus_path(x_0, x_1, t):
    # TODO: the geodesic conditional path of the flat torus and its velocity, (x_t, dx_t)
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def torus_path(x_0, x_1, t):
    def wrap_angle(a):  # into (-pi, pi]
        return math.pi - torch.remainder(math.pi - a, 2 * math.pi)

    v = wrap_angle(x_1 - x_0)  # (B, d) log_{x_0}(x_1): the short way round each circle
    return wrap_angle(x_0 + t[:, None] * v), v


# %%
check_torus_path(torus_path)

# %% [markdown]
# **Exercise 2: the exponential-map Euler step.** Write `sphere_exp_step(x, v, dt)` returning the next point of
# the sampler of section 4: for unit vectors `x` of shape `(B, D)` (any `D`: the check uses circles, spheres and
# a 4-sphere), raw network outputs `v` of shape `(B, D)` (not tangent!) and a float `dt`, project `v` onto the
# tangent space at `x`, then follow the great circle: $x_{\text{next}} = \exp_x(dt\, u)$ with
# $u = v - \langle v, x\rangle x$. Mind the rows where $u = 0$. Then ask yourself how far
# $(x + dt\,u)/|x + dt\,u|$ (the projected step) lands from your answer, and why the gap shrinks like $dt^3$.

# %%
def sphere_exp_step(x, v, dt):
    # TODO: project v onto the tangent space at x, then one exponential-map step of length dt
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def sphere_exp_step(x, v, dt):
    u = dt * (v - (v * x).sum(-1, keepdim=True) * x)  # (B, D) the tangent step
    n = u.norm(dim=-1, keepdim=True)  # (B, 1)
    return torch.cos(n) * x + torch.sinc(n / math.pi) * u  # sinc(n / pi) = sin(n) / n, and 1 at n = 0


# %%
check_sphere_exp_step(sphere_exp_step)

# %% [markdown]
# **Going further.** (a) Sample the trained sphere model with your step:
# `manifold_euler(S, rfm, x0_eval, step=lambda x, u: sphere_exp_step(x, u, 1.0))` (the solver passes the
# tangent step $h v$) and compare with `sol_rfm.x`. (b) Sample it with the projected step instead
# (`step=S.retract`) and compare the energy distances at 4 Euler steps. (c) Give the Euclidean model of
# section 5 a Gaussian source in $\mathbb R^3$ (ordinary flow matching as in lesson 03) and see how far from
# the sphere its samples land before the projection. (d) Train a torus model that reads the raw angles
# (`TimeMLP.from_profile(P, dim=2)` with `rfm_loss`) and look at the samples near the seams.

# %% [markdown]
# ## Summary
#
# - Riemannian flow matching replaces the straight line by the geodesic: $x_t = \exp_{x_0}(t\log_{x_0}x_1)$, with
#   the tangent velocity $u_t = \log_{x_t}(x_1)/(1-t)$ of constant length $d(x_0, x_1)$; on the sphere and the
#   flat torus both have closed forms, and the loss is lesson 03's with the Riemannian norm.
# - The model outputs tangent vectors (on the sphere: project the network's output, $v - \langle v, x\rangle x$;
#   on the torus: read periodic features, write angular velocities), and the sampler steps with the
#   exponential map, so samples never leave the manifold.
# - Exact test beds: von Mises-Fisher mixtures on $S^2$ (Wood's algorithm needs no rejection there) and wrapped
#   Gaussian mixtures on $T^2$; quality by an energy distance with the manifold's own metric, of negative type,
#   against its noise floor.
# - A Euclidean flow in $\mathbb R^3$ plus a final projection works with many steps at this budget, but its
#   trajectories cut through the ball, its field must be learned off the manifold, and with few steps its
#   projected samples are clearly worse than the Riemannian model's (section 5 prints by how much).
#
# ## References
# - *Flow Matching on General Geometries* (Chen, Lipman, 2024): Riemannian flow matching, geodesic (and spectral)
#   premetrics, the conditional velocity $\log_{x_t}(x_1)/(1-t)$, experiments on spheres, tori and meshes.
# - *Flow Matching for Generative Modeling* (Lipman, Chen, Ben-Hamu, Nickel, Le, 2023): the Euclidean method
#   this appendix generalises.
# - *Simulation of the von Mises Fisher distribution* (Wood, 1994): the exact vMF sampler.
# - *Energy statistics: A class of statistics based on distances* (Székely, Rizzo, 2013), and *Distance
#   covariance in metric spaces* (Lyons, 2013): energy distances in metric spaces of negative type.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
