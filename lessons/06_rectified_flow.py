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
# # 06 · Rectified flow and reflow
#
# **Learning goals**
# - see why one Euler step of flow matching with the independent coupling lands every sample on the
#   same point, and why a *deterministic* coupling removes the problem;
# - write reflow in plain PyTorch (generate pairs with the trained flow, retrain on them), check it
#   against `tutorlib.solvers.reflow_coupling` and `tutorlib.reflow`, and train the 2- and 3-rectified
#   flows;
# - measure what each round buys: straightness, transport cost, and sample quality at 1, 2 and 4 steps,
#   all on the same noise against the noise floor;
# - distil the 2-rectified flow into a one-step generator;
# - see where reflow hurts: every round learns the previous flow's samples, never the data, so its
#   errors accumulate;
# - test two training improvements from the seed papers, a U-shaped time distribution and a
#   pseudo-Huber loss, against plain reflow at the same budget.
#
# **Prerequisites:** lesson 03 (the linear path, the CFM loss, Euler sampling, `ode_solve`); lesson 00
# (energy distance and its noise floor). Lesson 05 (couplings, straight and crossing paths) helps.
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU busy with other work, load average 3.7): CPU standard ≈ 2.6 min · GPU standard: not measured yet · smoke ≈ 21 s. The last cell prints this run's time.
#
# **Loads:** in the standard profile, the checkpoints the training code below made
# (`data/checkpoints/l06_*_standard.pt`, through `tutorlib.checkpoints.CheckpointChain`: each is loaded only
# where training would start from the same inputs, and the run prints what training prints). **Trains:**
# otherwise, on the checkerboard, the 1-rectified flow (`P.steps_2d` steps); then, for a third of
# `P.steps_2d` steps each: the 2- and 3-rectified flows, two distilled one-step models, three 2-rectified
# flows with the seed papers' training improvements and one on data-side pairs (exercise 3).

# %% [markdown]
# ## Setup

# %%
import copy
import time

import torch

from tutorlib import data, metrics, plotting
from tutorlib.claims import claim
from tutorlib.couplings import Coupling, ot_assignment
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lesson06 import check_backward_coupling, check_noise_end_velocity, check_predicted_endpoint
from tutorlib.losses import cfm_loss
from tutorlib.models import TimeMLP, count_parameters
from tutorlib.paths import CondOTPath
from tutorlib.reflow import (UShapedTime, UniformTime, distill_loss, one_step, pair_batches, reflow_loss,
                             transport_cost)
from tutorlib.solvers import ode_solve, reflow_coupling
from tutorlib.checkpoints import CheckpointChain
from tutorlib.train import TrainConfig, batch_sampler, train
from tutorlib.widgets import choice_explorer

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")
# every model of this lesson is trained here, or loaded from the checkpoint this code made (standard profile:
# shipped in data/checkpoints); the generator then continues where training would have left it
trained = CheckpointChain("l06", P.name, gen)

# %% [markdown]
# Sizes, all from the profile: the 1-rectified flow trains for `P.steps_2d` steps, every later round
# (and the distillation) for a third of that, starting from the previous model's weights as Liu et al.
# do; each round generates `16 * P.n_eval_2d` pairs. Quality is measured two ways. The energy
# distance to held-out data, as a multiple of its noise floor, is the course's standard metric
# (lesson 00); it is averaged over five draws, the *same* five draws of noise and data for every
# model, so differences between models are not differences of luck. The checkerboard also has a
# sharper, exact check: the data never leave the filled squares, so the share of samples that land in
# an empty square is an error whose floor is exactly zero. It is measured on one fixed set of
# `10 * P.n_eval_2d` noise points, the same for every model.

# %%
path = CondOTPath()
cfg = TrainConfig.from_profile(P)
reflow_steps = P.steps_2d // 3  # steps of each reflow round and of the distillation
n_pairs = 16 * P.n_eval_2d  # (x_0, x_1) pairs generated per reflow round
floor = metrics.noise_floor(data.checkerboard, P.n_eval_2d, generator=gen, repeats=10)
x0_big = data.gaussian(10 * P.n_eval_2d, generator=gen, device=device)  # (M, 2) fixed noise for the shares
held = data.checkerboard(P.n_eval_2d, generator=gen, device=device)  # (N, 2) held-out data for the figures


def ed_ratio(sample_fn, repeats=5):
    """Energy distance / noise floor of `sample_fn(x_0)`, over `repeats` draws that are the same for every call."""
    g = torch.Generator().manual_seed(6)  # the same noise and held-out data for every model

    def sampler(n, generator):
        return sample_fn(data.gaussian(n, generator=generator, device=device))

    return floor.ratio(metrics.model_score(sampler, data.checkerboard, P.n_eval_2d, generator=g, repeats=repeats))


def euler(velocity, steps):
    """`x_0 -> x_1`: `steps` Euler steps of `velocity` from t = 0 to 1."""
    return lambda x_0: ode_solve(velocity, x_0, method="euler", steps=steps).x


def outside(x):
    """Share of the points (N, 2) that lie in an empty square of the checkerboard (0 for the data)."""
    return float(1.0 - data.in_checkerboard(x).float().mean())


print(f"noise floor of the energy distance (n = {P.n_eval_2d}): {floor}")
print(f"reflow rounds: {reflow_steps} steps each, {n_pairs} pairs; shares measured on {x0_big.shape[0]} points")

# %% [markdown]
# ## 1. One step of flow matching: where does it land?
#
# *Flow matching needs tens of steps. What goes wrong with one?*
#
# The **rectified flow** of Liu, Gong and Liu (*Flow Straight and Fast*) is flow matching on the
# linear path $x_t = (1-t)\,x_0 + t\,x_1$ (lesson 03): the velocity $v(x, t)$ is regressed on
# $x_1 - x_0$ over pairs drawn from a coupling of noise and data. With the independent coupling,
# as in lesson 03, we call it the **1-rectified flow** (1-RF). We train it on the checkerboard.

# %%
def fm_loss_fn(model, x_1):
    """CFM loss for one data batch x_1 (B, 2): fresh noise (the independent coupling) and uniform times."""
    x_0 = data.gaussian(x_1.shape[0], generator=gen, device=device)  # (B, 2)
    t = torch.rand(x_1.shape[0], generator=gen).to(device)  # (B,)
    return cfm_loss(model, path, x_0, x_1, t)


def train_1rf(model):
    hist = train(model, fm_loss_fn, lambda step: data.checkerboard(P.batch_2d, generator=gen, device=device),
                 cfg.replace(desc="1-RF"))
    hist.ema.copy_to(model)  # keep the EMA weights
    return hist


model = TimeMLP.from_profile(P).to(device)
print(f"TimeMLP: {count_parameters(model):,} parameters; {cfg.steps} steps, batch {P.batch_2d}")
run = trained("1-RF", train_1rf, model=model, config={"steps": cfg.steps, "batch": P.batch_2d})
print(f"1-RF: {run.describe()}")
flows = {"1-RF": run.model.requires_grad_(False)}  # the flows of every round, EMA weights

one = euler(flows["1-RF"], 1)(x0_big)  # (M, 2) one Euler step from the fixed noise
spread = float(one.std(0).norm() / held.std(0).norm())
ed_1rf = {nfe: ed_ratio(euler(flows["1-RF"], nfe)) for nfe in (1, 2, 4, 100)}
for nfe, r in ed_1rf.items():
    print(f"1-RF, {nfe:3d} Euler steps: energy distance {r:7.2f} x floor")
print(f"1-RF, one step: the samples' spread is {spread:.3f} of the data's; they centre on "
      f"({one[:, 0].mean():.2f}, {one[:, 1].mean():.2f}), the data mean is ({held[:, 0].mean():.2f}, {held[:, 1].mean():.2f})")
claim("1-RF, 100 Euler steps: energy distance / noise floor", ed_1rf[100], at_most={"standard": 2.0, "smoke": 60.0})
claim("1-RF, one Euler step: energy distance / noise floor", ed_1rf[1], at_least={"standard": 50.0, "smoke": 5.0})
claim("1-RF, one Euler step: spread of the samples / spread of the data", spread, at_most={"standard": 0.25, "smoke": 0.9})

# %% [markdown]
# The cell above prints the collapse: with 100 steps the samples are within twice the floor, with one
# step they are hundreds of times above it, and their spread is a small fraction of the data's, around
# the data mean. The reason is the coupling. At $t = 0$ the point $x_t = x_0$ is pure noise and,
# under the independent coupling, says nothing about which $x_1$ it was paired with; the best velocity
# there averages over all of them (exercise 1 asks for it exactly). One Euler step,
# $x_0 + v(x_0, 0)$, then lands on that average. Along the way the posterior over $x_1$ sharpens and
# the paths bend: that is why more steps help.
#
# **Straightness** (*Flow Straight and Fast*) measures the bending:
# $S = \int_0^1 \mathbb E\,\lVert (x_1 - x_0) - \dot x_t \rVert^2 dt$, zero if and only if every path is
# a straight line at constant speed, in which case one Euler step is exact. `metrics.straightness`
# computes it from a solver's trajectory.

# %%
x0_paths = x0_big[:P.n_eval_2d]  # (N, 2) noise for the trajectories
trajectories = {}


def record_paths(name):
    """100-step Euler trajectory of flow `name` from the fixed noise; returns its straightness."""
    sol = ode_solve(flows[name], x0_paths, method="euler", steps=100, return_trajectory=True)
    trajectories[name] = sol
    return float(metrics.straightness(sol.trajectory, sol.times))


straight = {"1-RF": record_paths("1-RF")}
print(f"1-RF: straightness {straight['1-RF']:.3f} (squared data units)")
claim("1-RF: straightness", straight["1-RF"], at_least={"standard": 0.5, "smoke": 0.05})

# %% [markdown]
# ## 2. Reflow, from scratch
#
# *Which coupling would make one step exact?*
#
# A **deterministic** one: if every $x_0$ is paired with a single $x_1 = T(x_0)$, then at $t = 0$ the
# average over the partners of $x_0$ is just $T(x_0)$, and one step can land on it. The trained flow
# offers such a map for free: integrate it from $x_0$ and call the endpoint $Z_1(x_0)$. The pairs
# $(x_0, Z_1(x_0))$ have noise on one side and (approximately) the data distribution on the other, so
# flow matching on them is another flow between the same two distributions: the **2-rectified flow**.
# Liu et al. prove that this *rectification* never increases any convex transport cost
# $\mathbb E\, c(x_1 - x_0)$ of the coupling, and that repeating it (reflow) makes the paths straighter.
#
# In plain PyTorch, a round of reflow is three small functions: make the pairs once, draw random rows
# of them with fresh times, and regress the velocity on $x_1 - x_0$ as before.

# %%
@torch.no_grad()
def reflow_pairs_scratch(velocity, x_0, steps):
    """Pair each noise x_0 (B, 2) with the flow's sample from it: `steps` Euler steps from t = 0 to 1."""
    x, h = x_0, 1.0 / steps
    for k in range(steps):
        x = x + h * velocity(x, torch.full((x.shape[0],), k * h, device=x.device))  # (B, 2)
    return x_0, x


def reflow_batch_scratch(x_0, x_1, batch, generator):
    """Random rows of the fixed pairs (with replacement) and fresh uniform times, all from `generator`."""
    idx = torch.randint(x_0.shape[0], (batch,), generator=generator).to(x_0.device)  # (batch,)
    t = torch.rand(batch, generator=generator).to(x_0.device)  # (batch,)
    return x_0[idx], x_1[idx], t


def reflow_loss_scratch(model, x_0, x_1, t):
    """The CFM loss on coupled pairs: mean ||model(x_t, t) - (x_1 - x_0)||^2 on the linear path."""
    x_t = (1 - t[:, None]) * x_0 + t[:, None] * x_1  # (B, 2)
    return (model(x_t, t) - (x_1 - x_0)).square().mean()


noise = data.gaussian(n_pairs, generator=gen, device=device)  # (n_pairs, 2)
pairs = reflow_coupling(flows["1-RF"], noise, steps=100)  # Coupling(x_0, x_1)
# 100 float32 Euler steps in another order of operations: equal up to rounding
torch.testing.assert_close(reflow_pairs_scratch(flows["1-RF"], noise, 100), tuple(pairs), atol=1e-4, rtol=1e-4)
batch_lib = pair_batches(pairs, P.batch_2d, generator=torch.Generator().manual_seed(1))(0)
batch_scratch = reflow_batch_scratch(*pairs, P.batch_2d, torch.Generator().manual_seed(1))
torch.testing.assert_close(batch_scratch, batch_lib)
with torch.no_grad():
    torch.testing.assert_close(reflow_loss_scratch(flows["1-RF"], *batch_scratch),
                               reflow_loss(flows["1-RF"], path, *batch_lib))
print("from-scratch pairs, batches and loss agree with reflow_coupling, pair_batches and reflow_loss")

# %% [markdown]
# From here on the library does it: `reflow_coupling` makes the pairs, `tutorlib.reflow.pair_batches`
# draws the batches (it also takes other time distributions, section 6) and `reflow_loss` is the
# loss (it also takes a pseudo-Huber premetric). One function trains a round, starting from the weights
# of the flow that generated the pairs; we use it for the 2-rectified flow now and for every variant
# later, so all of them see the same pairs, the same batches and the same number of steps.

# %%
def train_round(pairs, init, desc, times=UniformTime(), huber=None):
    """One reflow round: `reflow_steps` steps on the fixed `pairs`, from a copy of `init`'s weights."""
    def train_fn(model):
        batches = pair_batches(pairs, P.batch_2d, generator=torch.Generator().manual_seed(2), times=times)
        hist = train(model, lambda m, b: reflow_loss(m, path, *b, huber=huber), batches,
                     cfg.replace(steps=reflow_steps, desc=desc))
        hist.ema.copy_to(model)
        return hist

    run = trained(desc, train_fn, model=copy.deepcopy(init).requires_grad_(True),
                  config={"steps": reflow_steps, "pairs": len(pairs.x_0), "times": repr(times), "huber": huber})
    print(f"{desc}: {run.describe()}")
    return run.model.requires_grad_(False)  # sampled, not trained, from here on


couplings = {"1-RF": pairs}  # the pairs each flow generated
flows["2-RF"] = train_round(pairs, flows["1-RF"], "2-RF")
straight["2-RF"] = record_paths("2-RF")
print(f"straightness: 1-RF {straight['1-RF']:.4f}, 2-RF {straight['2-RF']:.2e} "
      f"({straight['2-RF'] / straight['1-RF']:.1e} of 1-RF's)")
claim("straightness: 2-RF / 1-RF", straight["2-RF"] / straight["1-RF"], at_most={"standard": 0.01, "smoke": 0.5})

# %% [markdown]
# One round of reflow straightens the paths by orders of magnitude (the cell above prints the ratio).
#
# ## 3. A third round, and quality at 1, 2 and 4 steps
#
# *How much does each round buy where it matters, at very few steps?* The 3-rectified flow repeats the
# round on the pairs that 2-RF generates from the same noise. Then we score all three flows at 1, 2, 4
# and 100 Euler steps, with the same draws for every model.

# %%
couplings["2-RF"] = reflow_coupling(flows["2-RF"], noise, steps=100)
flows["3-RF"] = train_round(couplings["2-RF"], flows["2-RF"], "3-RF")
straight["3-RF"] = record_paths("3-RF")
nfes = (1, 2, 4, 100)
ed = {"1-RF": ed_1rf}
for name in ("2-RF", "3-RF"):
    ed[name] = {nfe: ed_ratio(euler(flows[name], nfe)) for nfe in nfes}
print("energy distance / noise floor     " + "".join(f"{nfe:>3d} step{'s' if nfe > 1 else ' '}" for nfe in nfes)
      + "    straightness")
for name, row in ed.items():
    print(f"{name:32s}" + "".join(f"{row[nfe]:10.2f}" for nfe in nfes) + f"    {straight[name]:.2e}")
claim("one Euler step: energy distance of 2-RF / energy distance of 1-RF", ed["2-RF"][1] / ed["1-RF"][1],
      at_most={"standard": 0.5, "smoke": 0.9})
claim("2-RF, one Euler step: energy distance / noise floor", ed["2-RF"][1], at_most={"standard": 2.0, "smoke": 60.0})
claim("straightness: 3-RF / 2-RF", straight["3-RF"] / straight["2-RF"], at_most={"standard": 1.0, "smoke": 2.0})
plotting.metric_curves({name: (list(nfes), [row[n] for n in nfes]) for name, row in ed.items()},
                       "Euler steps (NFE)", "energy distance / noise floor", floor=1.0, log_y=True,
                       title="checkerboard: quality against the number of steps, per reflow round")

# %% [markdown]
# The table and the figure above show the effect of one round: 2-RF's one-step energy distance is
# close to the floor, where 1-RF's is hundreds of times above it (the claim: at most half, in the
# standard profile). The third round straightens the paths further but, by this metric, has little
# left to gain: *Improving the Training of Rectified Flows* makes the same observation at image scale
# and argues that one round is enough. The paths of the three flows:

# %%
choice_explorer({name: sol.trajectory for name, sol in trajectories.items()}, "flow", data=held, n_paths=60)

# %% [markdown]
# 1-RF's paths bend as they sort the points into squares; after one round they are straight lines,
# which cannot cross: the map from noise to data is the same, only the way there has changed.
#
# The transport cost $\mathbb E\lVert x_1 - x_0\rVert^2$ of each coupling tells the same story from the
# side of the pairs. For reference, the cheapest pairing of the same number of noise and data points
# (the exact optimal assignment, lesson 05) is a lower bound; the independent coupling is far above it.

# %%
n_ot = P.n_eval_2d
x1_ind = data.checkerboard(n_ot, generator=gen, device=device)  # (n, 2) fresh data for the independent pairs
cost = {"independent": float(transport_cost(noise[:n_ot], x1_ind))}
for name in ("1-RF", "2-RF"):
    cost[f"{name}'s pairs"] = float(transport_cost(*couplings[name]))
sigma = ot_assignment(noise[:n_ot], x1_ind)  # (n,) the optimal assignment of these noise and data points
cost["optimal assignment"] = float(transport_cost(noise[:n_ot], x1_ind[sigma]))
for name, c in cost.items():
    print(f"transport cost E|x_1 - x_0|^2, {name:20s} {c:.4f}")
claim("transport cost: 1-RF's pairs / independent pairs", cost["1-RF's pairs"] / cost["independent"],
      at_most={"standard": 0.5, "smoke": 0.95})
claim("transport cost: 2-RF's pairs / 1-RF's pairs", cost["2-RF's pairs"] / cost["1-RF's pairs"],
      at_most={"standard": 1.005, "smoke": 1.05})

# %% [markdown]
# The first rectification, from the independent coupling to 1-RF's pairs, removes most of the cost
# (the cell prints it, within a few percent of the optimal assignment); the second changes it by a
# fraction of a percent (the claim allows half a percent of slack for the finite pairs and the
# imperfect fit: Liu et al.'s theorem is about the exact flows).
#
# ## 4. Distillation into one step
#
# *2-RF is straight but not perfectly so: can a model trained only for one step do better?*
#
# **Distillation** (Liu et al.; InstaFlow) regresses a one-step generator directly on a flow's
# deterministic map: $\min \mathbb E\lVert x_0 + v(x_0, 0) - Z_1(x_0)\rVert^2$ over the pairs the
# teacher generated, starting from the teacher's weights (`tutorlib.reflow.distill_loss`). Only $t = 0$
# is trained and the pairs are fixed, so the result is a one-step map, no longer a flow. InstaFlow
# found at text-to-image scale that distilling the 1-rectified flow directly fails and that the reflow
# round is what makes distillation work; we distil both teachers, 2-RF and 1-RF, with the same budget.
# The claim is the issue's target: the one-step energy distance of the distilled 2-RF within twice
# 1-RF's at 100 steps.

# %%
def distil(teacher, pairs, desc):
    """A one-step student: `reflow_steps` steps of distill_loss on the teacher's pairs, from its weights."""
    def train_fn(student):
        hist = train(student, lambda m, b: distill_loss(m, *b),
                     batch_sampler(*pairs, batch_size=P.batch_2d, generator=torch.Generator().manual_seed(3)),
                     cfg.replace(steps=reflow_steps, desc=desc))
        hist.ema.copy_to(student)
        return hist

    run = trained(desc, train_fn, model=copy.deepcopy(teacher).requires_grad_(True),
                  config={"steps": reflow_steps, "pairs": len(pairs[0])})
    print(f"{desc}: {run.describe()}")
    return run.model.requires_grad_(False)  # sampled, not trained, from here on


students = {"distilled 2-RF": distil(flows["2-RF"], couplings["2-RF"], "distil 2-RF"),
            "distilled 1-RF": distil(flows["1-RF"], couplings["1-RF"], "distil 1-RF")}
ed_distilled = {name: ed_ratio(lambda x_0, m=m: one_step(m, x_0)) for name, m in students.items()}
for name, r in ed_distilled.items():
    print(f"{name}, one step: energy distance {r:.2f} x floor")
print(f"for comparison, one Euler step: 2-RF {ed['2-RF'][1]:.2f}, 1-RF {ed['1-RF'][1]:.1f}; "
      f"1-RF at 100 steps {ed['1-RF'][100]:.2f}")
claim("distilled 2-RF, one step: energy distance / 1-RF's at 100 Euler steps",
      ed_distilled["distilled 2-RF"] / ed["1-RF"][100], at_most={"standard": 2.0, "smoke": 30.0})
claim("distilled 1-RF, one step: energy distance / 1-RF's at 100 Euler steps",
      ed_distilled["distilled 1-RF"] / ed["1-RF"][100], at_most={"standard": 2.0, "smoke": 60.0})
plotting.scatter_grid({"data (held out)": held, "1-RF, 100 steps": euler(flows["1-RF"], 100)(x0_paths),
                       "1-RF, 1 step": euler(flows["1-RF"], 1)(x0_paths),
                       "2-RF, 1 step": euler(flows["2-RF"], 1)(x0_paths),
                       "3-RF, 1 step": euler(flows["3-RF"], 1)(x0_paths),
                       "distilled 2-RF, 1 step": one_step(students["distilled 2-RF"], x0_paths)}, cols=3)

# %% [markdown]
# Both students reach, in one step, the quality the flows reach in 100 (the cell above prints the
# ratios). In two dimensions a small network learns even 1-RF's curved map directly, so the failure
# InstaFlow reports for images does not appear here; section 5 shows which of the two students is
# closer to the data, with a sharper measure.
#
# %% [markdown]
# ## 5. Where reflow hurts
#
# *Each round learns the previous flow's samples. What does a round lose?*
#
# No reflow round sees the data again: 2-RF is trained to reproduce 1-RF's samples, errors included,
# and adds its own fitting error; 3-RF copies 2-RF's. The energy distance above is too coarse to see
# this (every good model sits near the floor, within its noise), so we use the checkerboard's exact
# check: the share of samples in the empty squares, 0 for the data, on the same fixed noise for every
# model.

# %%
shares = {"data": outside(data.checkerboard(x0_big.shape[0], generator=gen, device=device))}
for name in ("1-RF", "2-RF", "3-RF"):
    shares[f"{name}, 100 steps"] = outside(euler(flows[name], 100)(x0_big))
    shares[f"{name}, 1 step"] = outside(euler(flows[name], 1)(x0_big))
for name, m in students.items():
    shares[f"{name}, 1 step"] = outside(one_step(m, x0_big))
for name in ("1-RF", "2-RF"):
    shares[f"{name}'s pairs (x_1)"] = outside(couplings[name].x_1)
for name, s in shares.items():
    print(f"in an empty square: {name:22s} {s:6.2%}")
se = (shares["1-RF, 100 steps"] * (1 - shares["1-RF, 100 steps"]) / x0_big.shape[0]) ** 0.5
print(f"(one standard error of a share near {shares['1-RF, 100 steps']:.1%}: {se:.2%})")
claim("in an empty square, 100 steps: 2-RF minus 1-RF", shares["2-RF, 100 steps"] - shares["1-RF, 100 steps"],
      at_least={"standard": 0.0})
claim("in an empty square, 100 steps: 3-RF minus 1-RF", shares["3-RF, 100 steps"] - shares["1-RF, 100 steps"],
      at_least={"standard": 0.005})
claim("in an empty square: 2-RF at 1 step minus 2-RF at 100 steps",
      shares["2-RF, 1 step"] - shares["2-RF, 100 steps"], at_least={"standard": 0.0})
for k in (1, 2):
    claim(f"in an empty square: |distilled {k}-RF at 1 step minus {k}-RF at 100 steps|",
          abs(shares[f"distilled {k}-RF, 1 step"] - shares[f"{k}-RF, 100 steps"]), at_most={"standard": 0.01})
plotting.metric_curves(
    {"100 Euler steps": ([1, 2, 3], [shares[f"{k}-RF, 100 steps"] for k in (1, 2, 3)]),
     "1 Euler step": ([1, 2, 3], [shares[f"{k}-RF, 1 step"] for k in (1, 2, 3)])},
    "reflow round (k-RF)", "share of samples in an empty square", floor=0.0, floor_label="data (0)",
    log_x=False, title="checkerboard: errors of k-RF against the data")

# %% [markdown]
# The cell above prints the shares and claims (standard profile) that no round gets closer to the
# data than 1-RF at 100 steps, and that 3-RF ends further from it: the rounds trade accuracy against
# the data for straightness, and the trade compounds. At one step each round is better than the
# last, because it is straighter; at 100 steps each is a little worse, because it copies a copy.
# The distilled model, at one step, sits close to its teacher 2-RF at 100 steps.
#
# Two remedies from the seed papers work on the pairs rather than the training: *Simple ReFlow* and
# *Improving the Training of Rectified Flows* also make pairs from the data side, real data paired with
# the noise the flow sends it to (exercise 3 does it); *Rectified Diffusion* argues that what matters
# is exactly this matched-pairs step, not straightness for its own sake.
#
# ## 6. Training the round better
#
# *At a fixed budget of steps, can the round itself be trained better?*
#
# *Improving the Training of Rectified Flows* (Lee, Lin and Fanti) observes that after one round the
# loss is concentrated near the two ends of the path, and proposes two changes to plain reflow:
# draw the training times from a **U-shaped** density
# $p(t) = a\cosh(a(t - \tfrac12)) / (2\sinh(a/2))$ with $a = 4$ (twice the uniform density at the
# ends; `tutorlib.reflow.UShapedTime`), and replace the squared error by a robust **pseudo-Huber**
# premetric $\sqrt{\lVert d\rVert^2 + c^2} - c$ of the error $d$ (on images a perceptual version; in 2D
# the plain one, with $c$ a small fraction of the typical error). First, does the premise hold here?
# The cell below measures the trained 2-RF's loss at each time, on fresh pairs from 1-RF.

# %%
fresh = reflow_coupling(flows["1-RF"], data.gaussian(P.n_eval_2d, generator=gen, device=device), steps=100)
t_grid = torch.linspace(0.0, 1.0, 11).tolist()
loss_at = []
with torch.no_grad():
    for tv in t_grid:
        tt = torch.full((P.n_eval_2d,), tv, device=device)  # (N,)
        loss_at.append(float(reflow_loss(flows["2-RF"], path, *fresh, tt)))
ends, middle = (loss_at[0] + loss_at[-1]) / 2, min(loss_at[3:8])
print("2-RF's loss by time: " + ", ".join(f"t = {tv:.1f}: {v:.2e}" for tv, v in zip(t_grid, loss_at)))
print(f"mean of the two ends / lowest in [0.3, 0.7]: {ends / middle:.1f}")
claim("2-RF's loss: mean of the two ends / lowest in [0.3, 0.7]", ends / middle, at_least={"standard": 1.5, "smoke": 1.0})
plotting.metric_curves({"2-RF": (t_grid, loss_at)}, "t", "reflow loss on fresh pairs", log_x=False, log_y=True,
                       title="where along the path the 2-RF loss lives")

# %% [markdown]
# Now the comparison: three more 2-rectified flows, trained like the plain one (same pairs, same
# initial weights, same batches and number of steps), with the U-shaped times, with the pseudo-Huber
# loss, and with both. We compare them at one step, where the improvements are meant to act, and at
# 100 steps.

# %%
huber_c = 0.003  # the pseudo-Huber constant, in data units (a fraction of the typical error of a pair)
variants = {"2-RF, U-shaped t": dict(times=UShapedTime(4.0)), "2-RF, pseudo-Huber": dict(huber=huber_c),
            "2-RF, both": dict(times=UShapedTime(4.0), huber=huber_c)}
for name, kw in variants.items():
    flows[name] = train_round(pairs, flows["1-RF"], name, **kw)
rows = ("2-RF", *variants)
compare = {name: {"ed1": ed_ratio(euler(flows[name], 1)), "out1": outside(euler(flows[name], 1)(x0_big)),
                  "out100": outside(euler(flows[name], 100)(x0_big))} for name in rows}
print(f"{'':22s} {'energy distance, 1 step':>24s} {'empty squares, 1 step':>22s} {'100 steps':>10s}")
for name, r in compare.items():
    print(f"{name:22s} {r['ed1']:20.3f} x floor {r['out1']:22.2%} {r['out100']:10.2%}")
ratio = {name: compare[name]["out1"] / compare["2-RF"]["out1"] for name in variants}
claim("in an empty square, 1 step: 2-RF with U-shaped t / plain 2-RF", ratio["2-RF, U-shaped t"],
      at_most={"standard": 1.0, "smoke": 3.0})
claim("in an empty square, 1 step: 2-RF with pseudo-Huber / plain 2-RF", ratio["2-RF, pseudo-Huber"],
      at_least={"standard": 0.9, "smoke": 0.2}, at_most={"standard": 1.1, "smoke": 3.0})
claim("in an empty square, 1 step: 2-RF with both / plain 2-RF", ratio["2-RF, both"],
      at_most={"standard": 1.5, "smoke": 3.0})

# %% [markdown]
# The cell above prints the comparison at equal budgets. (What it shows is written after a measured
# run; see the summary.)
#
# ## Exercises
#
# **Exercise 1: the velocity at the noise end.** Section 1 said that one Euler step of 1-RF lands
# every sample near the same point. Make that exact. For flow matching with the *independent*
# coupling, write `noise_end_velocity(x_0, data)`: the exact velocity $v(x_0, 0)$ of the marginal
# field at time 0, for noise `x_0` of shape `(B, D)`, where the data distribution is represented by
# the sample `data` of shape `(N, D)`. Recall (lesson 03) that the marginal velocity at $x$ is the
# average of $x_1 - x_0$ over all pairs whose path passes through $x$ at that time.

# %%
def noise_end_velocity(x_0, data):
    # TODO: the velocity at t = 0 of the independent coupling's marginal field, one row per noise sample
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def noise_end_velocity(x_0, data):
    return data.mean(0) - x_0  # (B, D): at t = 0, x_t = x_0 says nothing about x_1, so E[x_1 | x_0] = E[x_1]


# %%
check_noise_end_velocity(noise_end_velocity)

# %% [markdown]
# Compare your formula with what the trained 1-RF learned at $t = 0$, on the fixed noise:

# %%
with torch.no_grad():
    v_model = flows["1-RF"](x0_paths, torch.zeros(x0_paths.shape[0], device=device))  # (N, 2)
v_exact = noise_end_velocity(x0_paths, data.checkerboard(50 * P.n_eval_2d, generator=gen, device=device))
rel = float((v_model - v_exact).square().sum(1).mean() / v_exact.square().sum(1).mean())
print(f"1-RF at t = 0 vs your exact velocity: relative squared error {rel:.4f}")
claim("1-RF's velocity at t = 0 vs the exact one: relative squared error", rel, at_most={"standard": 0.05, "smoke": 0.9})

# %% [markdown]
# **Exercise 2: the endpoint a velocity predicts.** If a path were straight from here on, a point $x_t$
# at time $t$ moving with its current velocity $v(x_t, t)$ would arrive at a predictable point at
# $t = 1$. Write `predicted_endpoint(velocity, x_t, t)` returning it, for `x_t` `(B, D)`, times `t`
# `(B,)`, and a field called as `velocity(x, t)`. Then think: along the path of a *perfectly straight*
# flow, how does this prediction change with $t$?

# %%
def predicted_endpoint(velocity, x_t, t):
    # TODO: where x_t lands at t = 1 if it keeps its current velocity
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def predicted_endpoint(velocity, x_t, t):
    return x_t + (1 - t)[:, None] * velocity(x_t, t)  # (B, D)


# %%
check_predicted_endpoint(predicted_endpoint)

# %% [markdown]
# For a straight flow the prediction is the same from every point of a path (and equals the path's
# end). The cell below follows each flow's 100-step paths and measures how far the prediction drifts
# from the path's actual end, averaged over the paths: a straightness measure in data units.

# %%
def endpoint_drift(name):
    """Mean over paths of the largest distance between the predicted endpoint and the path's actual end."""
    sol = trajectories[name]
    with torch.no_grad():
        preds = torch.stack([predicted_endpoint(flows[name], x, torch.full((x.shape[0],), float(tk), device=device))
                             for x, tk in zip(sol.trajectory[:-1], sol.times[:-1])])  # (S, N, 2)
    return float((preds - sol.x).norm(dim=-1).amax(0).mean())


drift = {name: endpoint_drift(name) for name in ("1-RF", "2-RF", "3-RF")}
print("predicted endpoint, largest drift along a path (mean over paths): "
      + ", ".join(f"{k} {v:.4f}" for k, v in drift.items()))
claim("endpoint drift: 2-RF / 1-RF", drift["2-RF"] / drift["1-RF"], at_most={"standard": 0.1, "smoke": 0.9})

# %% [markdown]
# **Exercise 3: pairs from the data side.** `reflow_coupling` starts from exact noise, so the data side
# of its pairs carries 1-RF's errors (section 5). Integrate the other way: start from *real data* at
# $t = 1$ and run the ODE backwards to $t = 0$, so that the data side is exact and the noise side
# carries the errors instead. Write `backward_coupling(velocity, x_1, steps)` returning the pair
# `(x_0, x_1)`, with `steps` uniform Euler steps from $t = 1$ down to $t = 0$ (each step evaluates the
# field where it starts).

# %%
def backward_coupling(velocity, x_1, steps):
    # TODO: Euler steps from t = 1 back to t = 0, starting at the data; return (x_0, x_1)
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def backward_coupling(velocity, x_1, steps):
    x, h = x_1, 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), 1.0 - k * h, dtype=x.dtype, device=x.device)  # (B,) from 1 down to h
        x = x - h * velocity(x, t)  # (B, D): time decreases by h
    return x, x_1


# %%
check_backward_coupling(backward_coupling)

# %% [markdown]
# Now train a 2-rectified flow on data-side pairs made with your function (same number of pairs,
# steps and initial weights as the plain one), and compare the two at 1 and 100 steps. How far from
# $\mathcal N(0, I)$ does the encoded noise land?

# %%
with torch.no_grad():
    data_pairs = Coupling(*backward_coupling(flows["1-RF"], data.checkerboard(n_pairs, generator=gen, device=device), 100))
gauss_floor = metrics.noise_floor(data.gaussian, P.n_eval_2d, generator=gen, repeats=10)
enc_ratio = gauss_floor.ratio(metrics.energy_distance(data_pairs.x_0[:P.n_eval_2d], noise[:P.n_eval_2d]))
flows["2-RF, data-side pairs"] = train_round(data_pairs, flows["1-RF"], "2-RF, data-side pairs")
side = {name: {nfe: outside(euler(flows[name], nfe)(x0_big)) for nfe in (1, 100)}
        for name in ("1-RF", "2-RF", "2-RF, data-side pairs")}
for name, r in side.items():
    print(f"{name:22s} in an empty square: 1 step {r[1]:6.2%}, 100 steps {r[100]:6.2%}")
claim("in an empty square, 100 steps: 2-RF on data-side pairs minus 2-RF on noise-side pairs",
      side["2-RF, data-side pairs"][100] - side["2-RF"][100], at_most={"standard": 0.0})
print(f"energy distance between the encoded noise and N(0, I) samples: {enc_ratio:.2f} x the floor of two "
      f"N(0, I) draws ({gauss_floor})")
claim("data-side pairs: energy distance of the encoded noise to N(0, I) / its noise floor", enc_ratio,
      at_most={"standard": 3.0, "smoke": 20.0})

# %% [markdown]
# ## Summary
#
# - The **1-rectified flow** is flow matching on the linear path with the independent coupling. At
#   $t = 0$ its velocity is $\mathbb E[x_1] - x_0$, so one Euler step lands every sample on the data
#   mean; its paths bend, and it needs many steps.
# - **Reflow** retrains on the deterministic pairs $(x_0, Z_1(x_0))$ that the flow itself generates.
#   One round straightened the paths by orders of magnitude and brought the one-step energy distance
#   from hundreds of times the floor to near it; the transport cost fell from the independent
#   coupling's to within a few percent of the optimal assignment at the first rectification, and
#   barely moved at the second. A third round added little.
# - **Distillation** of 2-RF into a one-step map reached, at one step, about the quality of the
#   flows at 100 steps.
# - **Reflow hurts** because no round sees the data again: measured by the exact share of samples in
#   the checkerboard's empty squares, every round ended further from the data than 1-RF at 100 steps.
# - The seed papers' training improvements (U-shaped times, pseudo-Huber loss) were compared with plain
#   reflow at the same budget in section 6.
#
# ## References
# - *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow* (Liu, Gong,
#   Liu, 2022): rectified flow, reflow, straightness, the non-increasing transport costs, distillation.
# - *InstaFlow: One Step is Enough for High-Quality Diffusion-Based Text-to-Image Generation* (Liu et
#   al., 2023): reflow as the step that makes one-step distillation work, at text-to-image scale.
# - *Improving the Training of Rectified Flows* (Lee, Lin, Fanti, 2024): one round is nearly enough;
#   the U-shaped time distribution and the (perceptual) pseudo-Huber premetric; pairs from real data.
# - *Simple ReFlow: Improved Techniques for Fast Flow Models* (Kim et al., 2024): the design space of
#   reflow training, including forward and data-side (projected) pairs.
# - *SlimFlow: Training Smaller One-Step Diffusion Models with Rectified Flow* (Zhu, Liu, Liu, 2024):
#   reflow and distillation when the student is smaller than the teacher.
# - *Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow* (Wang et al., 2024): what
#   reflow needs is matched noise-sample pairs from a trained model, not straightness itself.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
