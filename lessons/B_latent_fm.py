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
# # B · Latent flow matching
#
# **Learning goals**
# - train a small convolutional autoencoder on MNIST and measure what its decoder costs: the judge
#   accuracy and Fréchet distance of *reconstructed* test digits, the ceiling of any model that lives in
#   its latent space;
# - standardise the latent with statistics fitted once on the training set, and see by experiment why
#   flow matching from $\mathcal N(0, I)$ needs it;
# - write latent flow matching in plain PyTorch (encode once, flow-match in the latent, decode only after
#   the ODE has ended) and check it against `tutorlib.latent`;
# - measure the cost of a training step and of a generated digit in latent and in pixel space, and compare
#   the quality of the two at equal training time.
#
# **Prerequisites:** lesson 09 (class-conditional flow matching on MNIST, classifier-free guidance, the judge's
# scores); lesson 03 (the CFM loss on the linear path).
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU): CPU standard ≈ 1.8 min · GPU standard: not measured yet · smoke ≈ 12 s. The last cell prints this run's time.
#
# **Loads:** MNIST and the judge. **Trains:** everything, every run (the training times are what this
# appendix measures): a convolutional autoencoder (`LatentConfig.ae_steps` steps), four latent flow models
# of `fm_steps / 8` to `fm_steps` steps and two more on rescaled latents, two pixel-space models of lesson
# 09's recipe for as many steps as fit in the latent models' measured training time, and short timed blocks of
# training steps in section 5.

# %% [markdown]
# ## Setup
#
# Two sets of sizes: `LatentConfig.from_profile(P)` for the autoencoder, the latent flow model and the
# evaluation, and lesson 09's recipe at its large-batch settings, `MNISTRecipe.large_batch(P)`, for the
# pixel-space baseline (its model, batch, optimiser, guidance scale and number of function evaluations). Both
# train on batches of the same size (`P.batch_mnist`), so a latent step and a pixel step see the same digits.
# (Lesson 09 itself now trains on a quarter of that batch for twice the steps, which the bench found faster
# on a CPU; the latent model's settings were measured at the large batch, so the comparison stays there.)

# %%
import statistics
import time

import torch

from tutorlib import plotting
from tutorlib.claims import claim
from tutorlib.data import load_mnist
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lessonB import check_latent_cfm_loss, check_normalise_latents, check_sample_and_decode
from tutorlib.guidance import drop_labels
from tutorlib.judge import frechet_distance, judge_accuracy, load_judge
from tutorlib.latent import (LatentConfig, LatentStats, encode_images, encoded_cfm_loss, latent_fm_batches,
                             sample_latent_digits, train_autoencoder, train_latent_fm)
from tutorlib.models import count_parameters
from tutorlib.recipes import MNISTRecipe, mnist_fm_batches, mnist_fm_loss, sample_digits, train_mnist_fm
from tutorlib.train import train

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
SEED = 0
gen = seed_everything(SEED)
P = profile()
cfg = LatentConfig.from_profile(P)
recipe = MNISTRecipe.large_batch(P)  # the pixel baseline, at the latent model's batch
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")
print(cfg)
print(f"pixel recipe: PatchUNet C = {recipe.base_channels}, batch {recipe.batch}, guidance w = {recipe.guidance}, "
      f"{recipe.nfe} Euler steps")

# %% [markdown]
# ## 1. The data and the yardsticks
#
# *How will we compare a latent model with a pixel model?* With lesson 09's judge: the **judge accuracy** of
# digits generated for given labels, and the **Fréchet distance** between the judge's features of generated
# and of held-out test digits, next to its floor (training digits against the same test digits, at the same
# sample size). Every score below uses the same `n` held-out labels, the same number of each digit.

# %%
train_x, train_y = load_mnist("train", limit=P.mnist_limit)  # (N, 1, 28, 28) in [-1, 1], (N,), CPU
test_x, test_y = load_mnist("test")  # (10000, 1, 28, 28), (10000,)
judge = load_judge()

per_class = cfg.n_eval // 10
held_idx = torch.cat([torch.nonzero(test_y == d).flatten()[torch.randperm(int((test_y == d).sum()), generator=gen)]
                      [:per_class] for d in range(10)])  # (n,) balanced, grouped by digit
held_x, held_y = test_x[held_idx].to(device), test_y[held_idx].to(device)  # (n, 1, 28, 28), (n,)
n_eval = held_y.shape[0]
real_x = train_x[torch.randperm(train_x.shape[0], generator=gen)[:n_eval]].to(device)  # (n, 1, 28, 28)
acc_real = judge_accuracy(held_x, held_y, judge)
fd_floor = frechet_distance(real_x, held_x, judge)
print(f"{train_x.shape[0]} training digits; {n_eval} held-out test digits ({per_class} per class)")
print(f"judge accuracy on them {acc_real:.1%}; Fréchet distance floor (train vs test, n = {n_eval}) {fd_floor:.2f}")

# %% [markdown]
# ## 2. The autoencoder: what does a digit lose in `d` numbers?
#
# *Dao et al. run flow matching on the latents of a pretrained autoencoder. What does the autoencoder
# itself cost us?* `ConvAutoencoder` is deliberately small: the encoder cuts the image into 2x2 patches
# (lesson 09's lossless `pixel_unshuffle`), applies three 3x3 convolutions down to `(2c, 7, 7)` and one linear
# map to `d` numbers; the decoder mirrors it. It is deterministic (no KL term, no noise): a plain
# autoencoder trained on the mean squared reconstruction error, for `cfg.ae_steps` steps. We time it: it is
# part of the latent model's training cost.

# %%
ae = cfg.build_autoencoder(seed=SEED).to(device)
hist_ae = train_autoencoder(ae, train_x, cfg, seed=SEED, device=device)
t_ae = hist_ae.total_time_s
print(f"autoencoder d = {cfg.latent_dim}, c = {cfg.ae_channels}: {count_parameters(ae):,} parameters; "
      f"{hist_ae.describe()}")

with torch.no_grad():
    recon = ae(held_x).clamp(-1, 1)  # (n, 1, 28, 28): the held-out digits after a trip through the latent
mse = float((recon - held_x).square().mean())
acc_recon = judge_accuracy(recon, held_y, judge)
fd_recon = frechet_distance(recon, held_x, judge)
print(f"reconstructed held-out digits: mean squared error {mse:.4f} (pixels in [-1, 1]); judge accuracy "
      f"{acc_recon:.1%} (real digits {acc_real:.1%}); Fréchet distance {fd_recon:.2f} = {fd_recon / fd_floor:.1f} x floor")
claim("judge accuracy of reconstructed test digits", acc_recon, at_least={"standard": 0.95, "smoke": 0.3})
claim("Frechet distance of reconstructed test digits / floor", fd_recon / fd_floor, at_most={"standard": 5.0, "smoke": 40.0})
show_idx = torch.cat([torch.nonzero(held_y == d).flatten()[:2] for d in range(10)])  # two of each digit
plotting.image_grid(torch.cat([held_x[show_idx], recon[show_idx]]), nrow=10,
                    title="held-out digits (top two rows) and their reconstructions (bottom two)")

# %% [markdown]
# The reconstructions are a little blurred (the printed squared error), but the judge still reads almost all
# of them correctly (at least 95 %, claimed in the standard profile). Their Fréchet distance, a small
# multiple of the floor, is **the decoder's own cost**: a latent model that learned the distribution of the
# training latents *perfectly* would generate, after decoding, exactly the reconstructions of training digits,
# and would score about this, not the floor. Section 6 checks this against the trained latent model.

# %% [markdown]
# ## 3. The latent, and why it must be normalised
#
# *Which numbers does flow matching see?* We encode the training set once, without gradients (the
# autoencoder is frozen from now on), and look at the latent coordinates.

# %%
start = time.perf_counter()
with torch.no_grad():
    z_scratch = torch.cat([ae.encode(train_x[i:i + 1000].to(device)) for i in range(0, train_x.shape[0], 1000)])
mean, std = z_scratch.mean(0), z_scratch.std(0)  # (d,), (d,): fixed statistics of the training latents
u_train_scratch = (z_scratch - mean) / std  # (N, d): zero mean, unit variance per coordinate
t_encode = time.perf_counter() - start

z_train = encode_images(ae, train_x).cpu()  # (N, d) the library's encoding
stats = LatentStats.fit(z_train)
u_train = stats.normalise(z_train)  # (N, d)
torch.testing.assert_close(z_train, z_scratch.cpu())
torch.testing.assert_close(u_train, u_train_scratch.cpu())
print(f"encoded {z_train.shape[0]} digits into {tuple(z_train.shape[1:])} latents in {t_encode:.1f} s")
print(f"raw latent: per-coordinate means from {float(mean.min()):+.2f} to {float(mean.max()):+.2f}, standard "
      f"deviations from {float(std.min()):.2f} to {float(std.max()):.2f} (the noise: 0 and 1)")

u_held = stats.normalise(encode_images(ae, held_x).cpu())  # (n, d) held-out digits, the training statistics
held_std = u_held.std(0)  # (d,)
print(f"normalised held-out latents: |mean| at most {float(u_held.mean(0).abs().max()):.2f}, standard deviations "
      f"{float(held_std.min()):.2f} to {float(held_std.max()):.2f}")
claim("normalised held-out latents: mean per-coordinate standard deviation", float(held_std.mean()),
      at_least={"standard": 0.85, "smoke": 0.5}, at_most={"standard": 1.15, "smoke": 1.5})

# %% [markdown]
# The raw coordinates have offsets and spreads of their own (the printed ranges): nothing in the
# reconstruction loss fixes them. Worse, they are arbitrary. Multiply the encoder's output by 10 and divide
# the decoder's input by 10: the reconstructions are exactly the same, the latent is ten times larger.
# Flow matching is not indifferent to that choice. Its source is fixed, $u_0 \sim \mathcal N(0, I)$, and on
# the linear path $u_t = (1-t)\,u_0 + t\,u_1$:
#
# - if the latents are much larger than the noise, the noise is negligible from early times on, the velocity
#   targets $u_1 - u_0$ are large, and the network must stretch a unit ball of noise into a much wider cloud;
# - if they are much smaller, the targets are almost $-u_0$, the data is a small correction buried in them,
#   and the loss is dominated by the part that teaches nothing about digits.
#
# So we standardise each coordinate with `LatentStats`: its mean and standard deviation over the
# **training** latents, fixed once (Stable Diffusion's latent scale factor does the same with a single
# number). Not per batch: the target of flow matching would then change from batch to batch, and at
# sampling time there is no batch of data to standardise against. Held-out latents, normalised with the
# training statistics, come out with a spread near one (claimed). Section 7 measures what the choice of scale
# costs when it is *not* made.

# %% [markdown]
# ## 4. Latent flow matching, from scratch
#
# *What changes against lesson 09?* Almost nothing, and that is the point: the CFM loss with label dropout,
# on vectors $u \in \mathbb R^{d}$ instead of images, with a residual MLP (`TimeMLP`, lesson 03) instead of a
# U-Net. Sampling solves the guided ODE in the normalised latent and decodes **once**, at the end: the
# intermediate $u_t$ are not codes of digits. In plain PyTorch:

# %%
def latent_batch_scratch(latents, labels, batch, p_uncond, null_class, generator):
    """A class-conditional CFM batch of normalised latents: rows, label dropout, noise, times."""
    idx = torch.randint(latents.shape[0], (batch,), generator=generator)  # (B,)
    u_1, y = latents[idx], labels[idx]  # (B, d), (B,)
    drop = torch.rand(batch, generator=generator) < p_uncond  # (B,)
    y = torch.where(drop, torch.full_like(y, null_class), y)  # (B,) some labels -> the null class
    u_0 = torch.randn(u_1.shape, generator=generator)  # (B, d) noise of the latent's shape
    t = torch.rand(batch, generator=generator)  # (B,)
    return u_0, u_1, t, y


def latent_loss_scratch(model, u_0, u_1, t, y):
    """Mean of ||model(u_t, t, y) - (u_1 - u_0)||^2 on the linear path in the latent."""
    u_t = (1 - t[:, None]) * u_0 + t[:, None] * u_1  # (B, d)
    return (model(u_t, t, y) - (u_1 - u_0)).square().mean()


@torch.no_grad()
def sample_scratch(model, decoder, mean, std, y, u_0, w, nfe):
    """Guided Euler steps in the normalised latent, then denormalise and decode once."""
    u, null = u_0, torch.full_like(y, model.null_class)
    for k in range(nfe):
        t = torch.full((u.shape[0],), k / nfe, device=u.device)  # (B,)
        v_c, v_u = model(u, t, y), model(u, t, null)  # (B, d) each
        u = u + (v_u + w * (v_c - v_u)) / nfe
    return decoder(u * std + mean).clamp(-1, 1)  # (B, 1, 28, 28): the only decoding


flow_check = cfg.build_flow_model(seed=1).to(device)  # untrained: the comparison needs no training
null = flow_check.null_class
scratch = latent_batch_scratch(u_train, train_y, cfg.batch, cfg.p_uncond, null, torch.Generator().manual_seed(1))
library = latent_fm_batches(u_train, train_y, cfg, generator=torch.Generator().manual_seed(1), device=device,
                            null_class=null)(0)
for name, ours, theirs in zip(("u_0", "u_1", "t", "y"), scratch, library):
    assert torch.equal(ours.to(device), theirs), name
with torch.no_grad():
    torch.testing.assert_close(latent_loss_scratch(flow_check, *library), mnist_fm_loss(flow_check, library))
u0_probe = torch.randn((10, cfg.latent_dim), generator=gen).to(device)  # (10, d)
y_probe = torch.arange(10, device=device)  # (10,)
digits_ours = sample_scratch(flow_check, ae.decode, stats.mean.to(device), stats.std.to(device), y_probe, u0_probe,
                             recipe.guidance, recipe.nfe)
digits_lib = sample_latent_digits(flow_check, ae.decode, stats, y_probe, w=recipe.guidance, nfe=recipe.nfe,
                                  u_0=u0_probe)
torch.testing.assert_close(digits_ours, digits_lib)
print(f"batches, loss and sampler agree with tutorlib.latent (latent flow model: {count_parameters(flow_check):,} "
      f"parameters; the pixel PatchUNet: {count_parameters(recipe.build_model()):,})")

# %% [markdown]
# The batch is drawn exactly as `latent_fm_batches` draws it (and as lesson 09's `mnist_fm_batches` draws
# images), the loss is `mnist_fm_loss` (the CFM loss does not care about the shape of what it moves), and
# the sampler is `sample_latent_digits`. From here on we use the library.

# %% [markdown]
# ## 5. What does a training step cost, in the latent and in pixels?
#
# *How much cheaper is a step on 32 numbers than on 784 pixels?* The cell times blocks of whole training
# steps (drawing the batch, loss, backward pass, clipping, optimiser, weight average) through the same
# `tutorlib.train.train` loop, on batches of the same size, with the same number of threads: lesson 09's
# pixel model on images, the latent MLP on the cached latents, and the latent MLP when every batch of
# images is encoded inside the step (`encoded_cfm_loss`, the encoder frozen under `torch.no_grad`). The
# blocks are interleaved, so that a change of the machine's load hits all three alike, and we report
# medians over the rounds.

# %%
pixel_block = max(2, P.steps_mnist // 1000)  # steps per timed block of the pixel model
latent_block = 4 * pixel_block  # steps per timed block of the latent models (each is much faster)
rounds = 5


def image_batches(seed):
    """Images, latent-shaped noise, times and dropped labels: a batch for encoded_cfm_loss."""
    g = torch.Generator().manual_seed(seed)

    def sampler(step):
        idx = torch.randint(train_x.shape[0], (cfg.batch,), generator=g)  # (B,)
        y = drop_labels(train_y[idx], cfg.p_uncond, null, generator=g)  # (B,)
        u_0 = torch.randn((cfg.batch, cfg.latent_dim), generator=g)  # (B, d)
        t = torch.rand(cfg.batch, generator=g)  # (B,)
        return train_x[idx].to(device), u_0.to(device), t.to(device), y.to(device)

    return sampler


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


pixel_model_t = recipe.build_model(seed=SEED).to(device, memory_format=torch.channels_last)
latent_model_t = cfg.build_flow_model(seed=SEED).to(device)
encoding_model_t = cfg.build_flow_model(seed=SEED).to(device)
stats_dev = stats.to(device)
runs = {
    "pixel": lambda s: train(pixel_model_t, mnist_fm_loss, mnist_fm_batches(
        train_x, train_y, recipe, generator=torch.Generator().manual_seed(s), device=device),
        recipe.train_config(progress=False).replace(steps=pixel_block)),
    "latent": lambda s: train(latent_model_t, mnist_fm_loss, latent_fm_batches(
        u_train, train_y, cfg, generator=torch.Generator().manual_seed(s), device=device),
        cfg.fm_train_config(latent_block)),
    "latent, encoding each batch": lambda s: train(
        encoding_model_t, lambda m, b: encoded_cfm_loss(m, ae.encode, stats_dev, *b), image_batches(s),
        cfg.fm_train_config(latent_block)),
}
block = {"pixel": pixel_block, "latent": latent_block, "latent, encoding each batch": latent_block}


def seconds_per_step(name, seed):
    sync()
    start = time.perf_counter()
    runs[name](seed)
    sync()
    return (time.perf_counter() - start) / block[name]


for name in runs:  # warm-up
    seconds_per_step(name, 0)
per_step = {name: [] for name in runs}
for r in range(rounds):
    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
        per_step[name].append(seconds_per_step(name, 100 + r))
step_s = {name: statistics.median(v) for name, v in per_step.items()}
ratio = {name: statistics.median(a / b for a, b in zip(per_step[name], per_step["pixel"])) for name in runs}
print(f"batch {cfg.batch}, {threads} thread(s), {rounds} interleaved rounds of {pixel_block} pixel / {latent_block} "
      f"latent steps")
for name in runs:
    print(f"{name:>28}: {step_s[name] * 1e3:8.2f} ms per step, {ratio[name]:.3f} x the pixel step "
          f"({1 / ratio[name]:.0f} x faster)")
claim("latent FM training step / pixel FM training step", ratio["latent"], at_most=0.5)
claim("latent FM step encoding each batch / pixel FM step", ratio["latent, encoding each batch"],
      at_most={"standard": 0.5})

# %% [markdown]
# The latent step is a small fraction of the pixel step (the ratio is printed; the claim, the brief's target,
# is at most one half). Encoding each batch inside the step costs the encoder's forward pass on top, still far
# below the pixel model; encoding the training set once (section 3 printed how long it took) is cheaper still,
# and it is what we do. The saving has a price that section 2 measured and the next sections will meet again.

# %% [markdown]
# ## 6. Training the latent model: quality against training steps
#
# *How fast does the latent model learn to draw digits?* Four complete runs of `train_latent_fm`, of
# `fm_steps / 8`, `/ 4`, `/ 2` and `fm_steps` steps (each with its own warm-up and cosine decay), scored by
# the judge on `n` digits generated for the held-out labels, from one fixed batch of latent noise, with
# lesson 09's guidance scale and number of Euler steps. We record each run's training time.

# %%
u0_eval = torch.randn((n_eval, cfg.latent_dim), generator=gen).to(device)  # (n, d) fixed latent noise


def score(images):
    """Judge accuracy and Fréchet distance of n generated digits for the held-out labels."""
    return {"accuracy": judge_accuracy(images, held_y, judge), "frechet": frechet_distance(images, held_x, judge)}


def latent_digits(model, stats_used, w=recipe.guidance):
    sync()
    start = time.perf_counter()
    images = sample_latent_digits(model, ae.decode, stats_used, held_y, w=w, nfe=recipe.nfe, u_0=u0_eval)
    sync()
    return images, time.perf_counter() - start


fractions = (8, 4, 2, 1)
latent_runs = {}
for f in fractions:
    steps = max(1, cfg.fm_steps // f)
    model_l, hist_l = train_latent_fm(cfg.build_flow_model(seed=SEED), u_train, train_y, cfg, steps=steps, seed=SEED,
                                      device=device)
    images, t_sample = latent_digits(model_l, stats)
    latent_runs[steps] = {"model": model_l, "train_s": hist_l.total_time_s, "sample_s": t_sample, **score(images)}
    print(f"latent FM {steps:5d} steps: trained in {hist_l.total_time_s:6.1f} s, judge accuracy "
          f"{latent_runs[steps]['accuracy']:6.1%}, Fréchet {latent_runs[steps]['frechet']:6.2f} "
          f"({latent_runs[steps]['frechet'] / fd_floor:.1f} x floor)")
longest, shortest = max(latent_runs), min(latent_runs)
final = latent_runs[longest]
claim(f"latent FM, {longest} steps: judge accuracy at w = {recipe.guidance}", final["accuracy"],
      at_least={"standard": 0.95, "smoke": 0.15})
claim(f"latent FM: Frechet distance after {longest} steps / after {shortest}", final["frechet"] /
      latent_runs[shortest]["frechet"], at_most={"standard": 1.0})
claim(f"latent FM, {longest} steps, w = {recipe.guidance}: Frechet distance / that of the reconstructions",
      final["frechet"] / fd_recon, at_most={"standard": 1.0})

# %% [markdown]
# The table shows the judge's accuracy and the Fréchet distance improving with the number of steps: the
# longest run is claimed at 95 % accuracy or more, and its Fréchet distance below the shortest run's. It is
# even below the reconstructions' (claimed): guidance ($w > 1$) exaggerates what makes a digit a 3 or a 7, and
# the judge's features reward that. The plain conditional model ($w = 1$) is the one that tries to reproduce
# the latent distribution, and for it the decoder's cost of section 2 is a floor it cannot go under:

# %%
images_w1, _ = latent_digits(final["model"], stats, w=1.0)
plain = score(images_w1)
print(f"latent FM, {longest} steps, w = 1: judge accuracy {plain['accuracy']:.1%} (reconstructions {acc_recon:.1%}), "
      f"Fréchet {plain['frechet']:.2f} (reconstructions {fd_recon:.2f}, floor {fd_floor:.2f})")
claim("latent FM at w = 1: Frechet distance / that of the reconstructions", plain["frechet"] / fd_recon,
      at_least={"standard": 0.9})
claim("latent FM at w = 1: judge accuracy minus that of the reconstructions", plain["accuracy"] - acc_recon,
      at_most={"standard": 0.02})

grid_labels = torch.arange(10, device=device).repeat(8)  # (80,) one column per digit
grid = sample_latent_digits(final["model"], ae.decode, stats, grid_labels, w=recipe.guidance, nfe=recipe.nfe,
                            generator=gen)
plotting.image_grid(grid, nrow=10,
                    title=f"latent FM samples, digits 0 to 9 from left to right ({longest} steps, w = {recipe.guidance})")

# %% [markdown]
# Without guidance the latent model does not go below the reconstructions' Fréchet distance (claimed: at least
# 0.9 of it) nor above their accuracy (at most 2 points more): whatever flow matching learns, the decoder
# adds its blur. The grid draws eight samples of each digit, one column per class, at the recipe's scale.

# %% [markdown]
# ## 7. Why normalise: the same autoencoder at another scale
#
# *Does the latent's scale really matter?* Section 3 argued that it does. Here is the experiment: train the
# same latent flow model, for `fm_steps / 2` steps, on the *raw* latents multiplied by 0.1 or by 10 (each
# the latent of an autoencoder whose reconstructions are exactly ours), and decode after dividing by the same
# factor. A `LatentStats` with zero mean and standard deviation `1 / s` does exactly that rescaling.

# %%
half = cfg.fm_steps // 2
scaled = {}
for s in (0.1, 10.0):
    stats_s = LatentStats(torch.zeros(cfg.latent_dim), torch.full((cfg.latent_dim,), 1.0 / s))  # u = s z
    model_s, hist_s = train_latent_fm(cfg.build_flow_model(seed=SEED), stats_s.normalise(z_train), train_y, cfg,
                                      steps=half, seed=SEED, device=device)
    scaled[s] = score(latent_digits(model_s, stats_s)[0])
    print(f"raw latent x {s:<4}: spread {float((s * z_train).std()):6.2f}; judge accuracy {scaled[s]['accuracy']:6.1%}, "
          f"Fréchet {scaled[s]['frechet']:6.2f}")
ref = latent_runs[half]
print(f"normalised     : spread {float(u_train.std()):6.2f}; judge accuracy {ref['accuracy']:6.1%}, "
      f"Fréchet {ref['frechet']:6.2f}   (all {half} steps)")
for s in (0.1, 10.0):
    claim(f"Frechet distance, raw latent x {s} / normalised latent ({half} steps)", scaled[s]["frechet"] / ref["frechet"],
          at_least={"standard": 1.2})

# %% [markdown]
# Same autoencoder, same network, same steps: the rescaled latents give clearly worse digits than the
# normalised ones (both claimed at least 1.2 times the Fréchet distance). The raw latent as the encoder happens
# to produce has some scale in between (section 3); the normalisation makes the result independent of that
# accident.

# %% [markdown]
# ## 8. Equal training time: latent against pixel
#
# *Given the same training time, which model draws better digits?* The latent model's time has two honest
# readings: the flow model's own training time (if the autoencoder is trained once and reused, as in
# practice), and the whole pipeline (the autoencoder, encoding the training set, the flow model). We give
# lesson 09's pixel recipe each of these budgets. Lessons train for a number of **steps**, never until a clock
# runs out, so each budget is a fixed number of pixel steps (`cfg.pixel_steps`: 70 and 120 in the standard
# profile, chosen from a measurement on a 2-core laptop CPU), the recipe's warm-up and cosine decay over those
# steps; the cell measures how long they took against the latent side's time, and claims that the two agree
# within a factor of 2 either way (the ratio of a pixel step to a latent step moves with the machine and its
# load: between 0.04 and 0.07 in this appendix's own runs). Both sides are scored
# alike: the same labels, the same guidance scale and number of Euler steps, the same judge.

# %%
budgets = {"latent FM alone": final["train_s"], "whole latent pipeline": t_ae + t_encode + final["train_s"]}
x0_eval = torch.randn((n_eval, 1, 28, 28), generator=gen).to(device)  # (n, 1, 28, 28) fixed pixel noise
pixel_runs = {}
for (what, seconds), steps in zip(budgets.items(), cfg.pixel_steps):
    recipe_b = recipe.replace(steps=steps, warmup_steps=min(100, max(1, steps // 10)))
    model_p, hist_p = train_mnist_fm(recipe_b, train_x, train_y, seed=SEED, device=device, progress=False)
    sync()
    start = time.perf_counter()
    images = sample_digits(model_p, held_y, w=recipe.guidance, nfe=recipe.nfe, x_0=x0_eval)
    sync()
    pixel_runs[what] = {"steps": steps, "budget_s": seconds, "train_s": hist_p.total_time_s,
                        "sample_s": time.perf_counter() - start, **score(images)}
    print(f"budget = {what} ({seconds:.1f} s): pixel FM, {steps} steps in {hist_p.total_time_s:.1f} s "
          f"({hist_p.total_time_s / seconds:.2f} x the budget), judge accuracy {pixel_runs[what]['accuracy']:.1%}, "
          f"Fréchet {pixel_runs[what]['frechet']:.2f} ({pixel_runs[what]['frechet'] / fd_floor:.1f} x floor)")
print(f"latent FM ({longest} steps): judge accuracy {final['accuracy']:.1%}, Fréchet {final['frechet']:.2f} "
      f"({final['frechet'] / fd_floor:.1f} x floor)")
whole = pixel_runs["whole latent pipeline"]
alone = pixel_runs["latent FM alone"]
per_digit = {"latent": final["sample_s"] / n_eval, "pixel": whole["sample_s"] / n_eval}
print(f"sampling cost per digit at {recipe.nfe} NFE with guidance: latent {per_digit['latent'] * 1e3:.3f} ms "
      f"(decoding included), pixel {per_digit['pixel'] * 1e3:.3f} ms ({per_digit['pixel'] / per_digit['latent']:.0f} x)")
claim("pixel FM's training time / the whole latent pipeline's", whole["train_s"] / budgets["whole latent pipeline"],
      at_least={"standard": 0.5}, at_most={"standard": 2.0})
claim("pixel FM's training time / the latent flow model's", alone["train_s"] / budgets["latent FM alone"],
      at_least={"standard": 0.5}, at_most={"standard": 2.0})
claim("judge accuracy at equal time (whole pipeline): latent minus pixel", final["accuracy"] - whole["accuracy"],
      at_least={"standard": 0.3, "smoke": 0.1})
claim("Frechet distance at equal time (whole pipeline): pixel / latent", whole["frechet"] / final["frechet"],
      at_least=2.0)
claim("judge accuracy at equal time (latent FM alone): latent minus pixel", final["accuracy"] - alone["accuracy"],
      at_least={"standard": 0.5})
claim("sampling cost per digit, latent / pixel", per_digit["latent"] / per_digit["pixel"], at_most=0.5)

# %% [markdown]
# At equal time the pixel model is far behind: with the whole pipeline's budget, including the autoencoder,
# its judge accuracy is claimed at least 30 points lower and its Fréchet distance at least twice the latent
# model's (compare its printed accuracy with chance, one in ten); with the flow model's time alone it has
# barely started. The claims on the training times check that the fixed step counts did buy about the same
# time on this machine. Generating a digit is also
# cheaper in the latent, decoder included: the printed ratio, at the same number of function evaluations.
#
# The comparison is at a small budget, where the latent model's head start matters most. Lesson 09 trains the
# same pixel recipe for `P.steps_mnist` steps (its claims: a judge accuracy of at least 95 % at the recipe's
# scale), with no decoder between the model and the pixels: a pixel model is not bound by any reconstruction,
# while the unguided latent model is (section 6). Where the two curves would cross is not measured here; the
# `full` profile (meant for a GPU) gives both sides more steps. The figures draw what this run measured: each
# point is a complete run, placed at its measured training time (for the latent runs, plus the autoencoder and
# the encoding).

# %%
offset = t_ae + t_encode  # the latent runs' shared cost before their first step
lat_x = [offset + r["train_s"] for r in latent_runs.values()]
pix_x = [r["train_s"] for r in pixel_runs.values()]


def cost_figure(key, ylabel, title, ceiling, ceiling_name, log_y=False):
    fig = plotting.metric_curves({"latent FM (autoencoder included)": (lat_x, [r[key] for r in latent_runs.values()]),
                                  "pixel FM (lesson 09's recipe)": (pix_x, [r[key] for r in pixel_runs.values()])},
                                 "training time on this machine (s)", ylabel, floor=ceiling, floor_label=ceiling_name,
                                 log_x=False, log_y=log_y, title=title, height=400)
    fig.add_vline(x=offset, line_dash="dash", line_color="grey")
    fig.add_annotation(x=offset, y=1, yref="paper", text="autoencoder + encoding", showarrow=False, xanchor="right",
                       yanchor="top", font=dict(color="grey", size=11))
    return fig

cost_figure("accuracy", "judge accuracy", f"judge accuracy against training time (w = {recipe.guidance}, "
            f"{recipe.nfe} Euler steps)", acc_recon, "reconstructions")

# %%
cost_figure("frechet", "Fréchet distance (judge features)", "Fréchet distance against training time",
            fd_recon, "reconstructions", log_y=True)

# %% [markdown]
# In both figures the latent curve starts late: the autoencoder and the encoding come first (the vertical line).
# The pixel points lie at the two equal-time budgets, the second at about the time of the latent model's last point,
# and the claims of this section say how far apart the two are there. The horizontal line is the reconstructions'
# score, which the guided latent samples pass in Fréchet distance (section 6).

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (warm-up): the latent normalisation, for latents of any shape.** Write
# `normalise_latents(z, z_train)` returning `(z - mean) / std`, with the mean and standard deviation of each
# coordinate over the **training** latents `z_train` `(N, *S)` (their first axis), for latents `z` `(B, *S)`
# of any shape `S`: a vector `(d,)` as here, or a feature map `(C, H, W)` as Stable Diffusion's. The check
# names the batch's own statistics and a single scale for all coordinates.

# %%
def normalise_latents(z, z_train):
    # TODO: per-coordinate statistics of z_train, applied to z
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def normalise_latents(z, z_train):
    return (z - z_train.mean(0)) / z_train.std(0)


# %%
check_normalise_latents(normalise_latents)

# %% [markdown]
# **Exercise 2: the latent loss on images, with a frozen encoder.** Section 4 trained on latents encoded once.
# Write the loss that encodes each batch itself: `latent_cfm_loss(model, encoder, mean, std, x_1, x_0, t, y)`
# takes images `x_1` `(B, 1, 28, 28)`, encodes them **without a gradient** into `encoder`, normalises with the
# fixed `mean` and `std`, and returns the scalar CFM loss on the linear path from the latent noise `x_0`
# `(B, *S)`, with labels `y`. The check compares the value and the gradients: the model's must be right, and
# the encoder must get none.

# %%
def latent_cfm_loss(model, encoder, mean, std, x_1, x_0, t, y):
    # TODO: encode without a gradient, normalise, the linear path, the mean squared error
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def latent_cfm_loss(model, encoder, mean, std, x_1, x_0, t, y):
    with torch.no_grad():
        u_1 = (encoder(x_1) - mean) / std  # (B, *S) no graph through the encoder
    t_ = t.reshape(-1, *([1] * (u_1.dim() - 1)))  # (B, 1, ...) broadcasts against any latent shape
    u_t = (1 - t_) * x_0 + t_ * u_1
    return (model(u_t, t, y) - (u_1 - x_0)).square().mean()


# %%
check_latent_cfm_loss(latent_cfm_loss)

# %% [markdown]
# **Exercise 3: midpoint sampling in the latent, then one decoding.** Section 4's sampler took Euler steps.
# Write `sample_and_decode(model, decoder, mean, std, y, u_0, w, steps)` that takes `steps` uniform
# **midpoint** steps (lesson 07: $u \leftarrow u + h\, v(u + \tfrac h2 v(u, t), t + \tfrac h2)$, two evaluations
# each) of the guided velocity $v_u + w\,(v_c - v_u)$ from the noise `u_0` `(B, *S)` at $t = 0$ to $t = 1$,
# and only then denormalises, decodes and clamps to $[-1, 1]$. The check names decoding before the ODE ends.

# %%
def sample_and_decode(model, decoder, mean, std, y, u_0, w, steps):
    # TODO: midpoint steps of the guided latent ODE, then u * std + mean, decode, clamp
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def sample_and_decode(model, decoder, mean, std, y, u_0, w, steps):
    null, h = torch.full_like(y, model.null_class), 1.0 / steps

    def v(u, t):  # the guided velocity at one shared time t
        t = torch.full((u.shape[0],), t, dtype=u.dtype, device=u.device)  # (B,)
        v_c, v_u = model(u, t, y), model(u, t, null)
        return v_u + w * (v_c - v_u)

    u = u_0
    with torch.no_grad():
        for k in range(steps):
            u = u + h * v(u + 0.5 * h * v(u, k * h), (k + 0.5) * h)
        return decoder(u * std + mean).clamp(-1, 1)


# %%
check_sample_and_decode(sample_and_decode)

# %% [markdown]
# **Going further (no self-check).** Give the autoencoder fewer dimensions (`cfg = cfg.replace(latent_dim=8)`
# in the setup cell) or more steps, and watch the reconstructions' scores (section 2) move the latent model's
# ceiling (section 6); or train the pixel recipe for lesson 09's `P.steps_mnist` steps and add it to the
# figures of section 8.

# %% [markdown]
# ## Summary
#
# - **Latent flow matching** is lesson 09's class-conditional CFM with guidance, run on the codes of a frozen
#   autoencoder: encode the training set once, flow-match from $\mathcal N(0, I)$ to the normalised latents
#   with a small MLP, and decode once, after the ODE.
# - The decoder's own error is a **ceiling**: the reconstructions' judge accuracy and Fréchet distance
#   bound what the unguided latent model reaches, whatever it learns.
# - The latent must be **standardised** with fixed training statistics: an autoencoder's latent scale is
#   arbitrary, and flow matching from unit noise trains worse on latents ten times too large or too small.
# - A latent training step costs a small fraction of a pixel step, and so does a generated digit; at equal
#   training time, autoencoder included, the latent model is far ahead on this budget.
#
# ## References
# - *Flow Matching in Latent Space* (Dao, Phung, Nguyen, Tran, 2023): flow matching on the latents of a
#   pretrained autoencoder, with classifier-free guidance.
# - *High-Resolution Image Synthesis with Latent Diffusion Models* (Rombach, Blattmann, Lorenz, Esser, Ommer,
#   2022): training generative models in an autoencoder's latent space, and the latent scale factor.
# - *Flow Matching for Generative Modeling* (Lipman, Chen, Ben-Hamu, Nickel, Le, 2023): the CFM loss and the
#   linear path.
# - *Classifier-Free Diffusion Guidance* (Ho, Salimans, 2022): label dropout and the guided combination.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
