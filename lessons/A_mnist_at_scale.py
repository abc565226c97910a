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
# # A · MNIST at scale
#
# **Learning goals**
# - put every way of generating that the course taught on one image problem, with one network, one judge
#   and one table: DDPM (lesson 01), flow matching with guidance (lesson 09), flow matching with OT pairs
#   within each class (lesson 05), 2-rectified flow and its one-step distillation (lesson 06), and a
#   shortcut model (lesson 07's best few-step model), scored by judge accuracy and Fréchet distance
#   against the number of network evaluations (NFE);
# - write the guided teacher's coupling (the data of reflow) in plain PyTorch, and see reflow and
#   distillation work on 784-dimensional images as they did in 2D;
# - measure what bf16 mixed precision (and `torch.compile`, on a GPU) changes per training step;
# - train the same recipe on several processes with `torchrun` and DistributedDataParallel, and check
#   that every process ends with the same weights as one process trained on the same global batches.
#
# **Prerequisites:** lesson 09 (the MNIST recipe, the judge, classifier-free guidance); lesson 06 (reflow,
# distillation); lesson 07 (average-velocity models, the shortcut objective); lesson 05 (OT within classes);
# lesson 01 (DDPM, DDIM).
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU): CPU standard ≈ 1.9 min · GPU standard: not measured yet · smoke ≈ 25 s. The last cell prints this run's time.
#
# **Loads:** MNIST, the judge, lesson 09's flow-matching model and lesson 01's DDPM (`fm_mnist_<profile>`,
# `ddpm_mnist_<profile>`: the standard profile's ship with the course), and this appendix's own checkpoints
# `a_*_<profile>` (the standard profile's ship too). **Trains** whatever is not found: 2-RF, the one-step
# student and the shortcut model (fine-tuned from lesson 09's model), and two small flow-matching models
# from scratch (independent and OT pairs); in section 7 a few timed training steps; in section 8 two
# `torchrun` jobs of six steps.

# %% [markdown]
# ## Setup
#
# Appendix A's sizes live in one frozen dataclass, `tutorlib.methods.ScaleConfig.from_profile(P)`: how many
# pairs the teacher draws, how long each model is fine-tuned, how many digits every score uses and which
# NFE budgets the table has. The `full` profile is meant for one GPU (lesson 09's recipe at `P.unet_channels
# = 64` for 20,000 steps, 50,000 reflow pairs, 10,000 digits per score); the standard profile runs the same
# code on a laptop CPU at the sizes printed below.

# %%
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tutorlib import plotting
from tutorlib.checkpoints import load_or_train
from tutorlib.claims import claim
from tutorlib.data import load_mnist
from tutorlib.ddpm import DDPMSchedule, linear_betas
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.distributed import init_distributed, train_distributed
from tutorlib.exercises.lessonA import check_class_ot_images, check_guided_jump
from tutorlib.fewstep import TwoTimePatchUNet
from tutorlib.files import file_sha256
from tutorlib.guidance import cfg_velocity
from tutorlib.judge import frechet_distance, judge_accuracy, load_judge
from tutorlib.methods import (ScaleConfig, sample_ddpm, sample_flow, sample_shortcut, teacher_pairs, train_distilled,
                              train_reflow, train_shortcut, train_small_fm)
from tutorlib.metrics import straightness
from tutorlib.models import count_parameters
from tutorlib.recipes import MNISTRecipe, load_or_train_mnist_ddpm, load_or_train_mnist_fm, mnist_fm_batches, mnist_fm_loss
from tutorlib.solvers import ode_solve

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
SEED = 0
gen = seed_everything(SEED)
P = profile()
recipe = MNISTRecipe.from_profile(P)
cfg = ScaleConfig.from_profile(P)
w = recipe.guidance  # the recipe's guidance scale (1.75)
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")
print(cfg)

# %% [markdown]
# ## 1. The yardsticks
#
# *What does "better" mean here?* Lesson 09's two numbers, on the same held-out test digits for every model:
# the **judge accuracy** (how often the judge reads a digit generated for label $y$ as $y$) and the
# **Fréchet distance** between the judge's features of the generated digits and of the held-out digits,
# with its floor (real training digits against the same test digits, at the same sample size). Every model
# starts from the *same* noise images `x_T` with the same labels, so differences in the table come from the
# models, not from the draw.

# %%
train_x, train_y = load_mnist("train", limit=P.mnist_limit)  # (N, 1, 28, 28) in [-1, 1], (N,)
test_x, test_y = load_mnist("test")
judge = load_judge()
per_class = cfg.n_eval // 10
held_idx = torch.cat([torch.nonzero(test_y == d).flatten()[:per_class] for d in range(10)])  # balanced
held_x = test_x[held_idx].to(device)  # (n, 1, 28, 28)
real_x = train_x[torch.randperm(train_x.shape[0], generator=gen)[:cfg.n_eval]].to(device)
fd_floor = frechet_distance(real_x, held_x, judge)
acc_real = judge_accuracy(held_x, test_y[held_idx].to(device), judge)
y_eval = torch.arange(10).repeat_interleave(per_class).to(device)  # (n,) the labels every model draws
x_T = torch.randn(cfg.n_eval, 1, 28, 28, generator=gen).to(device)  # (n, 1, 28, 28) the noise every model starts from
print(f"{train_x.shape[0]} training digits; {cfg.n_eval} held-out digits; judge accuracy on them {acc_real:.1%}; "
      f"Fréchet floor {fd_floor:.2f}")
claim("the judge reads the held-out test digits", acc_real, at_least={"standard": 0.98, "smoke": 0.9})


def score(images):
    """Judge accuracy against y_eval and Fréchet distance to the held-out digits."""
    return {"accuracy": judge_accuracy(images, y_eval, judge), "frechet": frechet_distance(images, held_x, judge)}


def in_chunks(sample, nfe, size=250):
    """Draw the n evaluation digits in chunks (the same noise and labels for every model)."""
    return torch.cat([sample(y_eval[i:i + size], nfe, x_T[i:i + size]) for i in range(0, cfg.n_eval, size)])


# %% [markdown]
# ## 2. The two models the course already trained
#
# *Where do we start?* Lesson 09's class-conditional flow-matching `PatchUNet` (trained with label dropout,
# so classifier-free guidance works) and lesson 01's label-conditional DDPM on the same network (no label
# dropout: it is sampled conditionally, with DDIM), trained on all training digits by the recipe
# (`recipe.steps` steps of `recipe.batch` digits) and by lesson 01's settings (`MNISTRecipe.large_batch(P)`).
# In the standard profile both ship with the course and load in seconds (each took minutes to half an hour of
# one CPU core). Flow matching is the **teacher** of everything that follows.

# %%
fm_run = load_or_train_mnist_fm(recipe, train_x, train_y, name=f"fm_mnist_{P.name}", seed=0, device=device,
                                progress=False)
fm = fm_run.model
schedule = DDPMSchedule(linear_betas(1000))
ddpm_run = load_or_train_mnist_ddpm(MNISTRecipe.large_batch(P), train_x, train_y, schedule,
                                    name=f"ddpm_mnist_{P.name}", seed=0, device=device, progress=False)
ddpm = ddpm_run.model
for label, run in (("flow matching", fm_run), ("DDPM", ddpm_run)):
    print(f"{label}: PatchUNet, {count_parameters(run.model):,} parameters, "
          + (f"loaded {run.path.name}" if run.loaded else "trained now"))

# %% [markdown]
# ## 3. Reflow at image scale: the teacher's coupling, from scratch
#
# *What does 2-rectified flow train on?* Lesson 06: on pairs $(x_0, Z_1(x_0))$ of noise and the teacher's
# own sample from it. Here the teacher is guided, so 2-RF learns the *guided* map and needs no guidance
# itself (one network call per step instead of a doubled batch). The pairs, in plain PyTorch: Euler steps
# of the classifier-free-guided velocity $v(x, t, \varnothing) + w\,(v(x, t, y) - v(x, t, \varnothing))$
# from $x_0$, checked against `tutorlib.methods.teacher_pairs`.

# %%
def guided_pairs(model, x_0, y, w, steps):
    """Noise x_0 (B, 1, 28, 28) and labels y (B,) -> the guided teacher's digits, by Euler steps."""
    null = torch.full_like(y, model.null_class)
    x, dt = x_0.clone(), 1.0 / steps
    with torch.no_grad():
        for k in range(steps):
            t = torch.full((x.shape[0],), k * dt, device=x.device)
            v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # one doubled batch
            v_cond, v_uncond = v.chunk(2)
            x = x + dt * (v_uncond + w * (v_cond - v_uncond))
    return x.clamp(-1, 1)


g_check = torch.Generator().manual_seed(1)
x0_c, x1_c, y_c = teacher_pairs(fm, 20, w=w, nfe=cfg.pair_nfe, generator=g_check)
torch.testing.assert_close(guided_pairs(fm, x0_c, y_c, w, cfg.pair_nfe), x1_c, atol=1e-5, rtol=1e-5)
print(f"the plain-PyTorch pairs match tutorlib.methods.teacher_pairs on {len(y_c)} pairs "
      f"({cfg.pair_nfe} guided Euler steps each)")

# %% [markdown]
# The appendix trains 2-RF on `cfg.pairs` such pairs, starting from the teacher's weights (as *Flow
# Straight and Fast* does; a fresh network would need the teacher's whole training again), then distils
# it: the **one-step student** regresses $x_0 + v(x_0, 0, y)$ on the same pairs, starting from 2-RF's
# weights. The **shortcut model** (lesson 07) is the teacher's network with a second time input, the step
# size $t - s$, whose new weights start at zero (`TwoTimePatchUNet.from_flow`), so it starts as the teacher
# for every step size and fine-tuning on real digits teaches it the jumps. Each goes through `load_or_train`
# under a configuration that records the teacher's checkpoint, the sizes and the seed; the teacher's pairs
# are drawn only if a model has to be trained.

# %%
base = {"teacher": fm_run.path.name, "teacher_sha256": file_sha256(fm_run.path),  # a new teacher: new models
        "scale": cfg.training_fields(), "w": w, "seed": SEED}
_pairs = {}


def pairs():
    if "p" not in _pairs:
        start = time.perf_counter()
        _pairs["p"] = teacher_pairs(fm, cfg.pairs, w=w, nfe=cfg.pair_nfe, generator=torch.Generator().manual_seed(SEED))
        print(f"  drew {cfg.pairs} teacher pairs in {time.perf_counter() - start:.0f} s")
    return _pairs["p"]


def fit(model, trained):
    model.load_state_dict(trained[0].state_dict())
    return trained[1]


def describe(run):
    return f"loaded {run.path.name}" if run.loaded else f"trained now: {run.result.describe()}"


rf_run = load_or_train(f"a_reflow_{P.name}", lambda m: fit(m, train_reflow(fm, pairs(), cfg, seed=SEED)),
                       model=recipe.build_model(seed=0).to(device), config={**base, "model": "2-RF"})
rf = rf_run.model
print("2-RF:", describe(rf_run))
st_run = load_or_train(f"a_distilled_{P.name}", lambda m: fit(m, train_distilled(rf, pairs(), cfg, seed=SEED)),
                       model=recipe.build_model(seed=0).to(device), config={**base, "model": "distilled"})
student = st_run.model
print("one-step student:", describe(st_run))
sc_run = load_or_train(f"a_shortcut_{P.name}",
                       lambda m: fit(m, train_shortcut(fm, train_x, train_y, cfg, seed=SEED)),
                       model=TwoTimePatchUNet.from_flow(fm), config={**base, "model": "shortcut"})
shortcut = sc_run.model
print("shortcut:", describe(sc_run))

# %% [markdown]
# *Did reflow straighten the paths, as it did in 2D?* Lesson 06's straightness $S$ (zero for straight paths
# at constant speed), on 64 trajectories of 20 Euler steps from the same noise: the guided teacher's against
# 2-RF's.

# %%
def path_straightness(velocity, x_0, steps=20):
    sol = ode_solve(velocity, x_0, steps=steps, return_trajectory=True)
    traj = sol.trajectory.flatten(2)  # (steps + 1, B, 784)
    return float(straightness(traj, sol.times))


x0_s, y_s = x_T[:64], y_eval[:64]
with torch.no_grad():
    s_teacher = path_straightness(cfg_velocity(fm, y_s, w), x0_s)
    s_rf = path_straightness(lambda x, t: rf(x, t, y_s), x0_s)
print(f"straightness: guided teacher {s_teacher:.4f}, 2-RF {s_rf:.4f} (ratio {s_rf / s_teacher:.3f})")
claim("2-RF's paths / the guided teacher's: straightness ratio", s_rf / s_teacher,
      at_most={"standard": 0.5, "smoke": 2.0})

# %% [markdown]
# ## 4. Flow matching with OT pairs within each class, at equal size
#
# *Does lesson 05's coupling help on images?* Two models trained from scratch side by side at a smaller
# width (`cfg.small_channels`) for `cfg.small_steps` steps: the recipe with independent pairs, and the
# recipe with noise and digits paired by exact OT *within each class* (`tutorlib.methods.ot_fm_batches`;
# OT over the whole batch would skew each class's prior, lesson 05 section 6). Same initialisation, same
# draws: only the pairing differs. In 784 dimensions a batch of `cfg.small_batch` digits split over ten
# classes is a tiny sample of each class, so the OT pairs are far from the true optimal transport; section
# 5's table shows what is left of lesson 05's gain.

# %%
small = recipe.replace(base_channels=cfg.small_channels, steps=cfg.small_steps, batch=cfg.small_batch,
                       warmup_steps=min(recipe.warmup_steps, max(1, cfg.small_steps // 10)))
small_runs = {}
for ot in (False, True):
    name = "otfm" if ot else "fm"
    small_runs[ot] = load_or_train(f"a_{name}_small_{P.name}",
                                   lambda m, ot=ot: fit(m, train_small_fm(train_x, train_y, small, ot=ot, seed=SEED,
                                                                          device=device)),
                                   model=small.build_model(seed=SEED).to(device),
                                   config={"recipe": dataclasses.asdict(small), "ot": ot, "seed": SEED,
                                           "train_digits": train_x.shape[0]})
    print(f"{'OT-FM' if ot else 'FM'} (C = {cfg.small_channels}):", describe(small_runs[ot]))
fm_small, otfm_small = small_runs[False].model, small_runs[True].model
with torch.no_grad():
    s_fm_small = path_straightness(cfg_velocity(fm_small, y_s, w), x0_s)
    s_ot_small = path_straightness(cfg_velocity(otfm_small, y_s, w), x0_s)
print(f"straightness at C = {cfg.small_channels}: FM {s_fm_small:.4f}, OT-FM {s_ot_small:.4f} "
      f"(ratio {s_ot_small / s_fm_small:.3f})")
claim("OT-FM's paths / FM's at equal size: straightness ratio", s_ot_small / s_fm_small,
      at_most={"standard": 1.0, "smoke": 3.0})

# %% [markdown]
# ## 5. Every model, every budget
#
# *Which method gives the best digits for a given number of network evaluations?* Each model draws the same
# `cfg.n_eval` digits from the same noise at every NFE budget of `cfg.nfes`. Guided models count a doubled
# batch as one NFE (lesson 09's convention); 2-RF, the student and DDPM run unguided. The one-step student
# has one budget only.

# %%
methods = {
    "DDPM (DDIM)": lambda y, k, x: sample_ddpm(ddpm, schedule, y, k, x),
    f"FM, CFG w = {w:g}": lambda y, k, x: sample_flow(fm, y, k, x, w=w),
    "2-RF": lambda y, k, x: sample_flow(rf, y, k, x),
    "one-step student": lambda y, k, x: sample_flow(student, y, k, x),
    f"shortcut, CFG w = {w:g}": lambda y, k, x: sample_shortcut(shortcut, y, k, x, w=w),
    f"FM (C = {cfg.small_channels}), CFG": lambda y, k, x: sample_flow(fm_small, y, k, x, w=w),
    f"OT-FM (C = {cfg.small_channels}), CFG": lambda y, k, x: sample_flow(otfm_small, y, k, x, w=w),
}
table, seconds, grids = {}, {}, {}
for name, sample in methods.items():
    budgets = (1,) if name == "one-step student" else cfg.nfes
    table[name], seconds[name] = {}, {}
    for k in budgets:
        start = time.perf_counter()
        images = in_chunks(sample, k)
        seconds[name][k] = time.perf_counter() - start
        table[name][k] = score(images)
        if k in (1, 4):
            grids[name, k] = torch.cat([images[y_eval == d][:1] for d in range(10)])  # one of each digit
header = "".join(f"{k:>16d}" for k in cfg.nfes)
print(f"judge accuracy / Fréchet distance (floor {fd_floor:.2f}) against NFE; {cfg.n_eval} digits each\n"
      f"{'NFE':<24}{header}")
for name, row in table.items():
    cells = "".join(f"{row[k]['accuracy']:>8.1%} {row[k]['frechet']:>7.2f}" if k in row else f"{'':>16}"
                    for k in cfg.nfes)
    print(f"{name:<24}{cells}")

# %% [markdown]
# The claims below are what the rest of the text relies on. The cell prints each ratio; the thresholds are
# the standard profile's (smoke runs the same code with tiny, barely trained models, so its thresholds only
# catch a broken pipeline).

# %%
fm_name, sc_name = f"FM, CFG w = {w:g}", f"shortcut, CFG w = {w:g}"
top = cfg.nfes[-1]
fd = {name: {k: r["frechet"] for k, r in row.items()} for name, row in table.items()}
acc = {name: {k: r["accuracy"] for k, r in row.items()} for name, row in table.items()}
print(f"FM at {top} NFE: accuracy {acc[fm_name][top]:.1%}, Fréchet {fd[fm_name][top] / fd_floor:.1f} x floor")
claim(f"guided FM at {top} NFE: judge accuracy", acc[fm_name][top], at_least={"standard": 0.95, "smoke": 0.05})
claim(f"guided FM at {top} NFE: Fréchet distance / the train-vs-test floor", fd[fm_name][top] / fd_floor,
      at_most={"standard": 2.0, "smoke": 500.0})
claim("at 1 NFE: the judge reads guided FM's blurred digits as their class", acc[fm_name][1],
      at_least={"standard": 0.9, "smoke": 0.05})
claim("at 1 NFE: DDPM (DDIM) draws noise: judge accuracy", acc["DDPM (DDIM)"][1], at_most={"standard": 0.3, "smoke": 0.5})
claim("at 1 NFE: 2-RF's Fréchet distance / FM's", fd["2-RF"][1] / fd[fm_name][1], at_most={"standard": 0.5, "smoke": 5.0})
claim("at 1 NFE: the one-step student's Fréchet distance / 2-RF's", fd["one-step student"][1] / fd["2-RF"][1],
      at_most={"standard": 0.8, "smoke": 5.0})
claim("at 1 NFE: the one-step student's judge accuracy", acc["one-step student"][1],
      at_least={"standard": 0.95, "smoke": 0.05})
claim(f"at {top} NFE: 2-RF's Fréchet distance / FM's", fd["2-RF"][top] / fd[fm_name][top],
      at_most={"standard": 1.1, "smoke": 20.0})
claim("at 2 NFE: the shortcut model's Fréchet distance / FM's", fd[sc_name][2] / fd[fm_name][2],
      at_most={"standard": 0.7, "smoke": 5.0})
claim(f"the shortcut model at 2 NFE / FM at {top} NFE: Fréchet distance", fd[sc_name][2] / fd[fm_name][top],
      at_most={"standard": 1.25, "smoke": 50.0})
claim(f"at {top} NFE: DDPM's Fréchet distance / FM's (unguided epsilon model vs guided flow)",
      fd["DDPM (DDIM)"][top] / fd[fm_name][top], at_least={"standard": 2.0, "smoke": 0.5})
claim(f"at 1 NFE: OT-FM's Fréchet distance / FM's at C = {cfg.small_channels}",
      fd[f"OT-FM (C = {cfg.small_channels}), CFG"][1] / fd[f"FM (C = {cfg.small_channels}), CFG"][1],
      at_most={"standard": 1.0, "smoke": 5.0})
small_top = fd[f"OT-FM (C = {cfg.small_channels}), CFG"][top] / fd[f"FM (C = {cfg.small_channels}), CFG"][top]
claim(f"at {top} NFE: OT-FM and FM at C = {cfg.small_channels} within 25 % (Fréchet ratio, either way)",
      max(small_top, 1 / small_top), at_most={"standard": 1.25, "smoke": 20.0})

# %%
curves = {name: (list(row), list(row.values())) for name, row in fd.items() if len(row) > 1}
fig = plotting.metric_curves(curves, "NFE", "Fréchet distance (judge features)", floor=fd_floor,
                             floor_label="train vs test digits", log_y=True,
                             title="Fréchet distance against NFE, every method")
fig.add_scatter(x=[1], y=[fd["one-step student"][1]], mode="markers", marker=dict(size=10, symbol="star"),
                name="one-step student")
fig

# %%
plotting.metric_curves({name: (list(row), list(row.values())) for name, row in acc.items() if len(row) > 1},
                       "NFE", "judge accuracy", floor=acc_real, floor_label="real test digits",
                       title="Judge accuracy against NFE, every method")

# %%
order = [name for name in methods if (name, 1) in grids]
plotting.image_grid(torch.cat([grids[name, 1] for name in order]), nrow=10,
                    title="One NFE: one digit of each class per model")
print("rows, top to bottom:", ", ".join(order))

# %% [markdown]
# What the table and the claims say, budget by budget:
#
# - **One NFE.** The guided teacher's single Euler step lands on a blur of each class (lesson 09 section
#   6): the judge still reads the class, but the Fréchet distance is far above the floor. 2-RF, whose paths
#   the reflow straightened (section 3), draws a recognisable digit from the same noise, and the one-step
#   student, trained for exactly that jump, a better one still (the claims bound both ratios). DDIM's first
#   step from pure noise divides by $\sqrt{\bar\alpha_T}$, about 0.006, and draws noise: DDPM needs many
#   steps (lesson 01).
# - **Two to four NFE.** The shortcut model at two jumps is already as good as the teacher at the top
#   budget (the claim: within 25 %). Its curve does not keep falling with more jumps: smaller jumps are
#   what its self-consistency training weights least, and lesson 07 saw the same few-step models level off
#   on the checkerboard.
# - **Many NFE.** 2-RF, trained on the teacher's own guided samples, is no worse than the teacher at the top
#   budget (the claim: at most 1.1 times), without guidance and so at half the teacher's cost per step.
# - **The small pair.** Trained from scratch for `cfg.small_steps` steps at `cfg.small_channels` channels,
#   both are far from the large models; OT pairs within classes give the straighter paths (section 4) and
#   the better one-step digits, and at many steps the two are close (the table).
#
# In the grid (one NFE, rows in the order the cell prints) the DDPM row is noise, the teacher's row blurred
# digits, and the 2-RF, student and shortcut rows sharp digits.

# %% [markdown]
# ## 6. What the table says, and what it costs
#
# *What does each method cost to train and to sample?* Sampling cost is the measured time above, per NFE
# budget; training cost, for the fine-tuned models, is their number of steps next to the teacher's. The
# cell prints both.

# %%
per_digit = {name: {k: 1e3 * s / cfg.n_eval for k, s in row.items()} for name, row in seconds.items()}
for name in methods:
    k = 1 if name == "one-step student" else cfg.nfes[-1]
    print(f"{name:<24} {per_digit[name][k]:6.2f} ms per digit at {k} NFE")
print(f"training steps: teacher {recipe.steps}; 2-RF +{cfg.reflow_steps} on {cfg.pairs} pairs "
      f"({cfg.pairs * cfg.pair_nfe} guided teacher evaluations to draw them); student +{cfg.distill_steps}; "
      f"shortcut +{cfg.shortcut_steps}; each small model {cfg.small_steps}")
claim("one-step student / guided FM at its top NFE: sampling time per digit",
      per_digit["one-step student"][1] / per_digit[fm_name][top], at_most={"standard": 0.2, "smoke": 1.0})

# %% [markdown]
# ## 7. What changes on a GPU: bf16 autocast and `torch.compile`
#
# *What would a GPU change beyond raw speed?* Two switches that matter at scale. **Mixed precision**:
# under `torch.autocast(device_type, dtype=torch.bfloat16)` matrix multiplications and convolutions run in
# bfloat16 (8 bits of mantissa, float32's range, so no loss scaling is needed) while the weights and the
# optimiser stay in float32. **`torch.compile`** fuses the network's element-wise operations into fewer
# kernels. On a modern GPU both cut the time of a training step; on a CPU bf16 is often *slower* (few CPUs
# have bf16 matrix units) and compiling costs more than it saves at these sizes. The cell measures the
# recipe's training step in float32 and under bf16 autocast on this machine (median of timed steps after a
# warm-up), checks that the bf16 loss stays close to the float32 loss on the same batch, and compiles only
# on CUDA.

# %%
def step_time(model, batch, *, bf16=False, steps=4):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, losses = [], []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = mnist_fm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        losses.append(float(loss.detach()))
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times), losses[0]


timing_batch = mnist_fm_batches(train_x, train_y, recipe.replace(batch=min(recipe.batch, 64)),
                                generator=torch.Generator().manual_seed(2), device=device)(0)
t32, loss32 = step_time(recipe.build_model(seed=1).to(device), timing_batch)
t16, loss16 = step_time(recipe.build_model(seed=1).to(device), timing_batch, bf16=True)
print(f"{device.type}: float32 {1e3 * t32:.0f} ms per step, bf16 autocast {1e3 * t16:.0f} ms "
      f"(speed-up {t32 / t16:.2f}x); first-step loss {loss32:.4f} vs {loss16:.4f}")
claim("bf16 autocast: first-step loss relative to float32's", abs(loss16 - loss32) / loss32, at_most=0.05)
if device.type == "cuda":
    compiled = torch.compile(recipe.build_model(seed=1).to(device))
    step_time(compiled, timing_batch, bf16=True, steps=2)  # compiles
    tc, _ = step_time(compiled, timing_batch, bf16=True)
    print(f"torch.compile + bf16: {1e3 * tc:.0f} ms per step (speed-up {t32 / tc:.2f}x over float32)")
else:
    print("torch.compile: measured on CUDA only (on a CPU its compile time exceeds what it saves at these sizes)")

# %% [markdown]
# The cell prints the measured speed-up on this machine. `tutorlib.train.TrainConfig(compile=True)` switches
# compiling on for any training run of the course.

# %% [markdown]
# ## 8. Past one machine: `torchrun` and DistributedDataParallel
#
# *When one GPU is not enough, what changes?* When a run takes too long on one device, or its batch no
# longer fits, data parallelism splits every **global batch** across processes (one per GPU): each
# computes the gradient of its share, DistributedDataParallel averages the gradients across processes
# (an all-reduce, overlapped with the backward pass), and every process takes the same optimiser step,
# so all hold the same weights. What the learner has to keep straight:
#
# - **the global batch** is what the recipe's learning rate was tuned for: keep it, and give each of $W$
#   processes `batch / W` digits (`tutorlib.distributed.GlobalBatches` draws the global batch from one
#   seeded generator and hands each rank its slice, so the data do not depend on $W$); growing the global
#   batch instead calls for a new learning rate (about linear in the batch for SGD, closer to its square
#   root for Adam) and a longer warm-up;
# - **the EMA** is updated identically on every rank from identical weights; only rank 0 needs to keep it;
# - **rank 0** logs, evaluates and writes the checkpoints (atomically, with their sha256); the others wait
#   at a barrier; a job that loses a process stops, and `--resume` continues from the last checkpoint;
# - the **backend**: NCCL between GPUs, gloo between CPU processes (what runs below).
#
# `scripts/train_mnist_ddp.py` is appendix A's training as a script. On one machine with four GPUs:
# `torchrun --standalone --nproc_per_node=4 scripts/train_mnist_ddp.py --profile full --out runs/ddp`; on
# two machines with eight GPUs each, the same script with torchrun's rendezvous:
# `torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 ...` on both. Here,
# two CPU processes train a tiny model for six steps, and this notebook's own process trains it on the same
# global batches.

# %%
def repo_root() -> Path:
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "scripts" / "train_mnist_ddp.py").is_file():
            return folder
    raise FileNotFoundError("scripts/train_mnist_ddp.py not found above the working folder: run the appendix "
                            "from the course's repository")


script = repo_root() / "scripts" / "train_mnist_ddp.py"
ddp_steps, ddp_batch, ddp_channels, ddp_limit = 6, 16, 8, 256  # a tiny job: the point is the mechanics
args = ["--profile", "smoke", "--steps", str(ddp_steps), "--batch", str(ddp_batch), "--channels", str(ddp_channels),
        "--limit", str(ddp_limit), "--checkpoint-every", "3", "--device", "cpu", "--save-every-rank"]
env = dict(os.environ, OMP_NUM_THREADS="1", TUTORLIB_THREADS="1")
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "ddp"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "--max_restarts=0", str(script), *args, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the two-process job failed:\n{done.stderr[-3000:]}")
    print(f"torchrun, 2 processes: {time.perf_counter() - start:.1f} s in all (most of it starting Python and "
          f"torch); rank 0 said: {done.stdout.strip().splitlines()[0]}")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # the same run in this one process: the script's recipe, the same global batches, no torchrun
    ddp_recipe = MNISTRecipe.from_profile(profile("smoke")).replace(steps=ddp_steps, batch=ddp_batch,
                                                                    base_channels=ddp_channels, warmup_steps=1)
    single, _, _ = train_distributed(ddp_recipe, *load_mnist("train", limit=ddp_limit), init_distributed("cpu"),
                                     out=Path(tmp) / "single", seed=0, checkpoint_every=3, log_every=10 ** 9)
rank_gap = max(float((ranks[0][k] - ranks[1][k]).abs().max()) for k in ranks[0])
nets = [ddp_recipe.build_model() for _ in range(2)]
nets[0].load_state_dict(ranks[0])
nets[1].load_state_dict({k: v.cpu() for k, v in single.state_dict().items()})
probe = torch.Generator().manual_seed(3)
xp, tp, yp = torch.randn(16, 1, 28, 28, generator=probe), torch.rand(16, generator=probe), torch.arange(16) % 11
with torch.no_grad():
    out_ddp, out_one = nets[0].eval()(xp, tp, yp), nets[1].eval()(xp, tp, yp)
output_gap = float((out_ddp - out_one).norm() / out_one.norm())
print(f"largest weight difference rank 0 vs rank 1: {rank_gap:.2e}; "
      f"2 processes vs 1 process, relative difference of the outputs on a probe batch: {output_gap:.2e}")
claim("DDP: rank 0 and rank 1 end with the same weights (largest difference)", rank_gap, at_most=1e-6)
claim("DDP: 2 processes vs 1 process on the same global batches (relative output difference)", output_gap,
      at_most=1e-4)

# %% [markdown]
# Both ranks hold identical weights (DistributedDataParallel's all-reduce leaves every process the same
# averaged gradient). Against one process trained here on the same global batches
# (`tutorlib.distributed.train_distributed` without torchrun is a one-process run), the networks agree to
# the printed tolerance and not to the last bit: the gradient of a batch computed as the mean of two
# half-batch means rounds differently in float32, and Adam, which divides each gradient by its own running
# size, turns a rounding difference in a near-zero gradient into a visible difference of that weight. `tests/test_distributed.py` checks the same, and
# that a job that loses a process stops and resumes from its last checkpoint.

# %% [markdown]
# ## Exercises
#
# **Exercise 1: one guided jump.** Section 5 sampled the shortcut model with classifier-free guidance applied
# to its *average* velocity. Write `guided_jump(u, x, s, t, y, w, null)`: from images `x` (B, C, H, W) at
# start times `s` (B,) to end times `t` (B,), using a model `u(x, s, t, y)` and the null label `null`,
# return the state after one jump with the guided average velocity. What does your jump give for `w = 0`,
# and for `w = 1`?

# %%
def guided_jump(u, x, s, t, y, w, null):
    # TODO: guide the average velocity with the null label, then jump from s to t
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def guided_jump(u, x, s, t, y, w, null):
    uncond = u(x, s, t, torch.full_like(y, null))
    cond = u(x, s, t, y)
    return x + (t - s).view(-1, 1, 1, 1) * (uncond + w * (cond - uncond))


# %%
check_guided_jump(guided_jump)

# %% [markdown]
# **Exercise 2: OT within each class, on images.** Section 4 paired noise with digits by exact OT within each
# class. Write `class_ot_images(x_0, x_1, y)` returning the digits `x_1` reordered so that row $i$ keeps the
# label `y[i]` and, within each class, the total squared distance to the noise is minimal. Images are
# (B, C, H, W); flatten them for the cost. Lesson 05's exercise did this in 2D over the whole batch: what
# goes wrong for a class-conditional model if you forget the classes?

# %%
def class_ot_images(x_0, x_1, y):
    # TODO: one exact assignment per class (scipy.optimize.linear_sum_assignment), on flattened images
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
from scipy.optimize import linear_sum_assignment


def class_ot_images(x_0, x_1, y):
    out = x_1.clone()
    for k in y.unique():
        rows = (y == k).nonzero().flatten()
        cost = torch.cdist(x_0[rows].flatten(1), x_1[rows].flatten(1)).square()
        _, cols = linear_sum_assignment(cost.numpy())
        out[rows] = x_1[rows[torch.from_numpy(cols)]]
    return out


# %%
check_class_ot_images(class_ot_images)

# %% [markdown]
# **Going further (no self-check).** Retrain 2-RF with `ScaleConfig.replace(pairs=...)` at a quarter and at
# four times the pairs and watch its one-step Fréchet distance; then rerun the appendix with
# `TUTORLIB_PROFILE=full` on a GPU, where every model is trained at lesson 09's full size.

# %% [markdown]
# ## Summary
#
# - One network, one judge, one noise draw: the course's methods side by side on MNIST, at the sizes the
#   header's profile gives (the standard profile fine-tunes for a few hundred steps on a CPU).
# - **Reflow** works on images as in 2D: fine-tuned on the guided teacher's own pairs, 2-RF's paths are
#   several times straighter, its one-step digits far better than the teacher's, and at many steps it is
#   as good as the teacher without needing guidance. The **one-step student** distilled from it is better
#   still at one step, at a small fraction of the teacher's sampling time.
# - The **shortcut model**, the teacher's network with a step-size input, learns jumps by self-consistency:
#   two jumps match the teacher's many steps.
# - **OT pairs within classes** straighten the paths of a model trained from scratch a little even in 784
#   dimensions, where a batch split over ten classes pairs each class's few digits only roughly.
# - bf16 autocast and `torch.compile` pay on a GPU (on this CPU bf16 was measured slower); past one GPU, DDP
#   keeps the global batch and splits it, and every process ends with the same weights.
#
# ## References
# - *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow* (Liu, Gong, Liu,
#   2023): reflow from the teacher's weights, distillation into one step.
# - *InstaFlow: One Step is Enough for High-Quality Diffusion-Based Text-to-Image Generation* (Liu et al.,
#   2024): reflow and distillation of a guided image model.
# - *One Step Diffusion via Shortcut Models* (Frans, Hafner, Levine, Abbeel, 2025): the shortcut objective.
# - *Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal Transport* (Tong et al.,
#   2024): OT-CFM.
# - *Multisample Flow Matching: Straightening Flows with Minibatch Couplings* (Pooladian et al., 2023).
# - *Flow Matching for Generative Modeling* (Lipman, Chen, Ben-Hamu, Nickel, Le, 2023).
# - *Denoising Diffusion Implicit Models* (Song, Meng, Ermon, 2021): the DDIM sampler.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
