"""Case ``guidance2d``: classifier-free guidance, CFG-Zero* and classifier guidance on labelled 2D data.

For each of :data:`DATASETS` (classes well separated), three networks are trained on the linear
path (:class:`~tutorlib.paths.CondOTPath`, lesson 08):

* ``cfm-cfg``: one class-conditional :class:`~tutorlib.models.TimeMLP` by CFM with label dropout
  (:func:`tutorlib.guidance.drop_labels`, probability :data:`P_UNCOND`): conditional and
  unconditional velocity in one network;
* ``classifier``: a time-dependent :class:`~tutorlib.models.NoisyClassifier2D` on noisy points
  (:func:`tutorlib.guidance.classifier_loss`), for classifier guidance;
* ``judge``: the same architecture trained on clean data only (t = 1), which scores the samples.

Sampling (EMA weights, Euler at :data:`GUIDE_NFE` steps, the same noise and the held-out labels for
every set) sweeps the guidance scale ``w`` (:data:`SCALES` per profile) for three methods:

* ``cfg-wW``: :func:`tutorlib.guidance.cfg_velocity` (``w = 1``: the conditional model, also swept
  over every NFE of the profile);
* ``cfgzero-wW``: CFG-Zero* (optimised scale ``s*``, zero-init of the first Euler step);
* ``clf-wW``: :func:`tutorlib.guidance.classifier_guided_velocity` on the network's unconditional
  field.

``W`` is the scale without a dot (``1_5`` for 1.5). Each set is stored with its labels
(``ENTRY:labels``); the labels are those of the held-out reference, so energy distance and MMD
compare like with like. ``metrics[DATASET]["guidance"][ENTRY]`` adds the class accuracy under the
judge, the diversity ``spread_ratio`` (the mean over classes of the samples' within-class spread,
:func:`tutorlib.metrics.within_class_spread`, divided by the held-out data's; at ``w = 0`` the
labels are ignored, so it measures the whole distribution) and each metric as a multiple of a
*label-matched* floor (``metrics[DATASET]["label_matched_floor"]``: fresh data with the held-out
class counts against the held-out set). Label-matched sets do not pay for class-count noise, so
the usual ``*_x_floor`` of a good conditional sampler can fall well below 1.

Lesson 08's comparisons beyond the sweep (every one recorded here):

* ``cfgstar-wW`` and ``cfgzi-wW``: CFG-Zero*'s two parts alone (the scale ``s*``; the zero-init);
* for :data:`EXACT` datasets (``eight_gaussians``: :meth:`tutorlib.guidance.LabelledGMM.ring`), the same
  sampling on the **exact** fields (``exact-METHOD-wW``, :meth:`LabelledGMM.flow_model`), the Bayes
  classifier's accuracy (``bayes_accuracy`` per entry) and the radius of the class means, and in
  ``metrics[DATASET]``: ``field_error`` (the network's conditional and unconditional velocity against
  the closed forms), ``classifier_check`` (the noisy classifier's cross-entropy against the exact
  posterior's; the implicit and explicit classifiers' gradient errors), ``sharpened_target`` (guided
  sampling with exact fields against ``p(x) p(y | x)^w``, :meth:`LabelledGMM.sharpened_target`, for the
  ring and for a ring of std :data:`OVERLAP_STD`) and ``guidance_term`` (``E|u_t(x | y) - u_t(x)|`` along
  the path for both rings).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from bench.common import (
    METRICS,
    BenchProfile,
    Run,
    build,
    derive_seed,
    generator,
    log,
    timed,
    train_config,
)
from tutorlib.data import TOY_DATASETS, gaussian, sample_labelled
from tutorlib.data import labelled_batches
from tutorlib.metrics import within_class_spread
from tutorlib.guidance import (
    LabelledGMM,
    cfg_velocity,
    classifier_guided_velocity,
    classifier_log_prob_grad,
    classifier_loss,
    drop_labels,
)
from tutorlib.losses import cfm_loss
from tutorlib.models import NoisyClassifier2D, TimeMLP
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve
from tutorlib.train import train

DATASETS = ("eight_gaussians", "checkerboard")
P_UNCOND = 0.2  # label-dropout probability of the CFG training
GUIDE_NFE = 64  # Euler steps of the guidance-scale sweep (lesson 08's)
JUDGE_STEPS_FRACTION = 3  # the judge trains for steps_2d // this many steps
CLF_T_EPS = 0.02  # classifier guidance: its term is evaluated at t clamped to [CLF_T_EPS, 1 - CLF_T_EPS]
SCALES: dict[str, tuple[float, ...]] = {  # guidance scales swept, per profile (lesson 08's in standard)
    "smoke": (0.0, 1.0, 3.0),
    "standard": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0),
    "full": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
}
METHODS = {
    "cfg": "classifier-free guidance, v_u + w (v_c - v_u), one batched forward pass",
    "cfgzero": "CFG-Zero*: s* v_u + w (v_c - s* v_u), s* = <v_c, v_u> / |v_u|^2, first Euler step zeroed",
    "cfgstar": "CFG-Zero*'s scale s* alone (no zero-init)",
    "cfgzi": "CFG with CFG-Zero*'s zero-init of the first Euler step alone",
    "clf": "classifier guidance, v_u + w (1 - t) / t grad log p_t(y | x) with the noisy classifier",
}
EXACT: dict[str, LabelledGMM] = {"eight_gaussians": LabelledGMM.ring()}  # datasets whose exact fields are known
EXACT_METHODS = ("cfg", "cfgzero", "cfgstar", "cfgzi")  # sampled on the exact fields as exact-METHOD-wW
OVERLAP_STD = 0.7  # the overlapping ring of the sharpened-target study (eight Gaussians of this std)
SHARPEN_SCALES = (1.0, 1.5, 2.0, 3.0, 5.0)  # scales of the sharpened-target study
SHARPEN_DRAWS = 16  # the sharpened target's importance sampling draws this many times n_eval_2d points
CHECK_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)  # times of the field and classifier checks
TERM_TIMES = (0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.98)  # times of the guidance-term profile


def scale_tag(w: float) -> str:
    """The scale as it appears in an entry name: ``w2``, ``w1_5``, ``wm1`` (minus one)."""
    text = f"{w:g}".replace("-", "m").replace(".", "_")
    return f"w{text}"


def _accuracy(judge: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of points ``(n, 2)`` that ``judge`` (at t = 1) assigns to their label ``y``."""
    with torch.no_grad():
        logits = judge(x, torch.ones(x.shape[0], device=x.device))  # (n, K)
    return float((logits.argmax(1) == y).float().mean())


def _class_means(x: torch.Tensor, y: torch.Tensor, K: int) -> torch.Tensor:
    """The mean of each class's points, ``(K, 2)``."""
    return torch.stack([x[y == k].mean(0) for k in range(K)])


def _label_matched_floor(run: Run, dataset: str, data: torch.Tensor, y_ref: torch.Tensor) -> dict[str, Any]:
    """Each metric between the held-out set and fresh data with exactly its label counts, repeated.

    Guided samples carry the held-out labels, so unlike the usual floor (two independent draws,
    class counts free) they pay nothing for class-count noise; this floor does not either.
    """
    K, n = TOY_DATASETS[dataset].num_classes, data.shape[0]
    counts = torch.bincount(y_ref.cpu(), minlength=K)  # (K,)
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for r in range(run.bp.floor_repeats):
        g = generator(run.seed, dataset, "matched-floor", r)
        xs, ys = sample_labelled(dataset, 4 * n, generator=g)  # (4n, 2): every class has enough points
        while bool((torch.bincount(ys, minlength=K) < counts).any()):
            more = sample_labelled(dataset, n, generator=g)
            xs, ys = torch.cat([xs, more[0]]), torch.cat([ys, more[1]])
        x = torch.cat([xs[ys == k][: int(counts[k])] for k in range(K)]).to(data.device)  # (n, 2)
        for name, metric in METRICS.items():
            values[name].append(float(metric(x, data)))
    return {name: {"mean": sum(v) / len(v), "std": float(torch.tensor(v).std()) if len(v) > 1 else 0.0,
                   "n": n, "repeats": len(v)} for name, v in values.items()}


def _train_models(run: Run, dataset: str) -> dict[str, torch.nn.Module]:
    """Train the CFG velocity model, the noisy classifier and the clean judge; return their EMA copies."""
    bp, seed, device = run.bp, run.seed, run.device
    K, path, B = TOY_DATASETS[dataset].num_classes, CondOTPath(), bp.P.batch_2d
    P = bp.P

    model = build(lambda: TimeMLP.from_profile(P, num_classes=K), derive_seed(seed, dataset, "cfg", "init"), device)
    g = generator(seed, dataset, "cfg", "batches")

    def cfg_loss(m, b):
        return cfm_loss(m, path, b.x_0, b.x_1, b.t, y=drop_labels(b.y, P_UNCOND, K, generator=g))

    hist = train(model, cfg_loss, labelled_batches(dataset, B, generator=g, device=device),
                 train_config(bp, f"{dataset} cfm-cfg"))
    run.add_training(dataset, "cfm-cfg", hist, p_uncond=P_UNCOND)
    models = {"cfg": hist.ema_model}

    for name, steps, clean in (("classifier", P.steps_2d, False),
                               ("judge", max(1, P.steps_2d // JUDGE_STEPS_FRACTION), True)):
        clf = build(lambda: NoisyClassifier2D(K, hidden=P.hidden_2d, depth=P.depth_2d),
                    derive_seed(seed, dataset, name, "init"), device)
        batches = labelled_batches(dataset, B, generator=generator(seed, dataset, name, "batches"), device=device)

        def loss(c, b, clean=clean):
            t = torch.ones_like(b.t) if clean else b.t
            return classifier_loss(c, path, b.x_1, b.y, t, b.x_0)

        hist = train(clf, loss, batches, train_config(bp, f"{dataset} {name}").replace(steps=steps))
        run.add_training(dataset, name, hist, trained_on="clean data (t = 1)" if clean else "noisy points x_t")
        models[name] = hist.ema_model
    return models


def _guided_fields(models: dict[str, torch.nn.Module], y: torch.Tensor, w: float,
                   nfe: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The velocity field of each method at scale ``w`` for labels ``y``."""
    model = models["cfg"]
    return {
        **_cfg_fields(model, y, w, nfe),
        "clf": classifier_guided_velocity(lambda x, t: model(x, t), models["classifier"], CondOTPath(), y, w,
                                          t_eps=CLF_T_EPS),
    }


def _cfg_fields(model, y: torch.Tensor, w: float,
                nfe: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """CFG, CFG-Zero* and its two parts alone, for a network or the exact fields of a LabelledGMM."""
    zero = 0.5 / nfe  # zero-init of the first Euler step
    return {
        "cfg": cfg_velocity(model, y, w),
        "cfgzero": cfg_velocity(model, y, w, zero_star=True, zero_init_until=zero),
        "cfgstar": cfg_velocity(model, y, w, zero_star=True),
        "cfgzi": cfg_velocity(model, y, w, zero_init_until=zero),
    }


def _rel_err(v: torch.Tensor, u: torch.Tensor) -> float:
    """E|v - u|^2 / E|u|^2 over the rows."""
    return float((v - u).square().sum(1).mean() / u.square().sum(1).mean())


def _exact_checks(run: Run, dataset: str, models: dict[str, torch.nn.Module], gmm: LabelledGMM) -> dict[str, Any]:
    """Lesson 08's checks of the networks against the exact fields, and its study of the exact fields alone."""
    path, n, device, K = CondOTPath(), run.bp.P.n_eval_2d, run.device, gmm.num_classes
    model, clf = models["cfg"], models["classifier"]
    g = generator(run.seed, dataset, "exact-checks")
    field_error, classifier_check = {}, {}
    for tv in CHECK_TIMES:
        x_1, y = sample_labelled(dataset, n, generator=g, device=device)
        t = torch.full((n,), tv, device=device)  # (n,)
        x_t = path.sample(gaussian(n, generator=g).to(device), x_1, t).x_t  # (n, 2)
        with torch.no_grad():
            v_c, v_u = model(x_t, t, y), model(x_t, t)
            field_error[str(tv)] = {"cond": _rel_err(v_c, gmm.velocity(path, x_t, t, y)),
                                    "uncond": _rel_err(v_u, gmm.velocity(path, x_t, t))}
            ce = {"ce_classifier": float(torch.nn.functional.cross_entropy(clf(x_t, t), y)),
                  "ce_exact": float(torch.nn.functional.cross_entropy(gmm.logits(path)(x_t, t), y))}
        exact = classifier_log_prob_grad(gmm.logits(path), x_t, t, y)  # (n, 2)
        implicit = (v_c - v_u) / ((1 - t) / t)[:, None]  # the CFG model's implied classifier gradient
        classifier_check[str(tv)] = {**ce, "implicit_grad_rel_err": _rel_err(implicit, exact),
                                     "explicit_grad_rel_err": _rel_err(classifier_log_prob_grad(clf, x_t, t, y), exact)}
    rings = {"std_0.2": gmm, f"std_{OVERLAP_STD:g}": LabelledGMM.ring(std=OVERLAP_STD)}
    sharpened: dict[str, Any] = {}
    term: dict[str, Any] = {"t": list(TERM_TIMES)}
    x_0 = gaussian(n, generator=g).to(device)  # (n, 2)
    for name, mix in rings.items():
        x_1, y = mix.sample(n, generator=g, device=device)  # held-out data of this ring
        spread = within_class_spread(x_1, y, K)  # (K,)
        rows = {"bayes_accuracy": float((mix.classify(x_1) == y).float().mean())}
        for w in SHARPEN_SCALES:
            with torch.no_grad():
                x = ode_solve(cfg_velocity(mix.flow_model(path), y, w), x_0, method="euler", steps=GUIDE_NFE).x
            target = mix.sharpened_target(w, SHARPEN_DRAWS * n, generator=g)
            rows[scale_tag(w)] = {"w": w, "guided_accuracy": float((mix.classify(x) == y).float().mean()),
                                  "guided_spread_ratio": float((within_class_spread(x, y, K) / spread).nanmean()),
                                  "target_accuracy": target["accuracy"], "target_spread_ratio": target["spread_ratio"]}
        sharpened[name] = rows
        term[name] = []
        for tv in TERM_TIMES:
            t = torch.full((n,), tv, device=device)  # (n,)
            x_t = path.sample(x_0, x_1, t).x_t  # (n, 2) on class-y paths
            term[name].append(float((mix.velocity(path, x_t, t, y) - mix.velocity(path, x_t, t)).norm(dim=1).mean()))
    return {"field_error": field_error, "classifier_check": classifier_check, "sharpened_target": sharpened,
            "guidance_term": term}


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train the three networks per dataset, sweep the guidance scale of each method, score each set."""
    run = Run("guidance2d", bp, seed, device, DATASETS)
    scales = SCALES[bp.name]
    for dataset in DATASETS:
        K = TOY_DATASETS[dataset].num_classes
        data = run.set_reference(dataset)  # (n, 2)
        n = data.shape[0]
        # The held-out labels: the same draw as the reference (set_reference keeps only the points).
        x_ref, y_ref = sample_labelled(dataset, n, generator=generator(seed, dataset, "heldout"), device=device)
        if not torch.equal(x_ref, data):
            raise RuntimeError("the labelled draw does not reproduce the held-out reference")
        models = _train_models(run, dataset)
        data_spread = within_class_spread(data, y_ref, K)  # (K,)
        extra = run.datasets[dataset].extra
        matched = _label_matched_floor(run, dataset, data, y_ref)
        extra.update(num_classes=K, data_spread=data_spread.tolist(), guidance={}, label_matched_floor=matched,
                     judge_accuracy=_accuracy(models["judge"], data, y_ref),
                     classifier_accuracy_t1=_accuracy(models["classifier"], data, y_ref))
        x_0 = gaussian(n, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)

        gmm = EXACT.get(dataset)
        if gmm is not None:
            extra["exact_judge_accuracy"] = float((gmm.classify(data) == y_ref).float().mean())
            extra.update(_exact_checks(run, dataset, models, gmm))
        data_means = _class_means(data, y_ref, K)  # (K, 2)

        def sample(method: str, w: float, velocity, nfe: int) -> None:
            sol, s = timed(lambda: ode_solve(velocity, x_0, method="euler", steps=nfe), device)
            rec = run.add_samples(dataset, f"{method}-{scale_tag(w)}", "euler", sol.nfe, sol.x, s, labels=y_ref)
            finite = bool(torch.isfinite(sol.x).all())
            spread = (within_class_spread(sol.x, y_ref, K) / data_spread).nanmean() if finite else float("nan")
            acc = _accuracy(models["judge"], sol.x, y_ref) if finite else float("nan")
            means = _class_means(sol.x, y_ref, K)  # (K, 2)
            shift = float(((means - data_means).norm(dim=1) / data_spread).mean()) if finite else float("nan")
            entry = rec["array"].rsplit("/", 1)[-1]
            extra["guidance"][entry] = {
                "method": method, "w": w, "nfe": nfe, "accuracy": acc, "spread_ratio": float(spread),
                "mean_shift": shift, **{f"{m}_x_matched_floor": rec[m] / matched[m]["mean"] for m in METRICS}}
            if gmm is not None:
                extra["guidance"][entry]["bayes_accuracy"] = (float((gmm.classify(sol.x) == y_ref).float().mean())
                                                              if finite else float("nan"))
                extra["guidance"][entry]["radius"] = float(means.norm(dim=1).mean()) if finite else float("nan")
            log(f"[guidance2d] {dataset} {entry}: accuracy {acc:.3f}, energy {rec['energy_x_floor']:.2f} x floor "
                f"({rec['energy'] / matched['energy']['mean']:.2f} x label-matched floor), "
                f"spread {float(spread):.2f} x data")

        for w in scales:
            for method, velocity in _guided_fields(models, y_ref, w, GUIDE_NFE).items():
                sample(method, w, velocity, GUIDE_NFE)
            if gmm is not None:
                for method, velocity in _cfg_fields(gmm.flow_model(CondOTPath()), y_ref, w, GUIDE_NFE).items():
                    sample(f"exact-{method}", w, velocity, GUIDE_NFE)
        for nfe in bp.nfes:  # the conditional model (w = 1) against the step count
            if nfe != GUIDE_NFE:
                sample("cfg", 1.0, cfg_velocity(models["cfg"], y_ref, 1.0), nfe)

    run.config = {
        "datasets": list(DATASETS), "path": "CondOTPath", "p_uncond": P_UNCOND, "scales": list(scales),
        "guide_nfe": GUIDE_NFE, "nfe_sweep": {"method": "cfg", "w": 1.0, "nfes": list(bp.nfes)},
        "methods": METHODS, "cfgzero_zero_init_until": 0.5 / GUIDE_NFE, "clf_t_eps": CLF_T_EPS,
        "exact": {"datasets": {k: "LabelledGMM.ring()" for k in EXACT}, "methods": [f"exact-{m}" for m in EXACT_METHODS],
                  "overlap_std": OVERLAP_STD, "sharpen_scales": list(SHARPEN_SCALES),
                  "sharpen_draws": SHARPEN_DRAWS, "check_times": list(CHECK_TIMES), "term_times": list(TERM_TIMES)},
        "models": {"cfm-cfg": "TimeMLP.from_profile(P, num_classes=K)", "classifier": "NoisyClassifier2D(K, "
                   "hidden_2d, depth_2d) on x_t", "judge": "NoisyClassifier2D on clean data (t = 1), "
                   f"steps_2d // {JUDGE_STEPS_FRACTION} steps"},
        "sampling": "EMA weights; the same x_0 and the held-out labels for every set; nfe counts Euler steps "
                    "(a CFG step is one forward pass of the doubled batch; a classifier-guided step adds a "
                    "classifier forward and backward)",
        "train": dataclasses.asdict(train_config(bp, "guidance")),
    }
    return run
