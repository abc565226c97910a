"""Verified checkpoints: atomic saves, sha256 sidecars, and load-or-train (CONTRIBUTING.md, "Checkpoints and downloads").

Expensive models go through :func:`load_or_train`, which loads a checkpoint whose sha256
checks out (``torch.load(..., weights_only=True)``) and otherwise trains, then saves
atomically. :mod:`tutorlib.train` re-exports these names for convenience.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tutorlib.files import atomic_write, check_folder, data_dir, file_sha256, sweep_temporaries, temp_name

__all__ = [
    "CheckpointChain",
    "LoadOrTrain",
    "checkpoint_dirs",
    "file_sha256",
    "fingerprint",
    "load_checkpoint",
    "load_or_train",
    "load_state",
    "save_checkpoint",
    "save_state",
    "shipped_checkpoint_dir",
]




def shipped_checkpoint_dir() -> Path:
    """The checkpoints the course ships: the package data ``tutorlib.shipped``.

    In a checkout that is the repository's ``data/checkpoints`` folder; in an installed wheel the
    same files inside ``site-packages`` (read through ``importlib.resources``, so both work).
    """
    from importlib.resources import files

    return Path(str(files("tutorlib.shipped")))


def checkpoint_dirs() -> list[Path]:
    """Folders searched by :func:`load_or_train`, in order: shipped, then the cache.

    The cache is ``$TUTORLIB_DATA_DIR/checkpoints`` (default: the repository's ``data/``, so in a
    checkout both are the same folder unless ``TUTORLIB_DATA_DIR`` is set; ``~/.cache/tutorlib`` when
    tutorlib is installed outside a checkout). New checkpoints are written to the cache.
    """
    dirs = [shipped_checkpoint_dir(), data_dir() / "checkpoints"]
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _listed_digests(path: Path) -> list[str]:
    """The digests the sidecar of ``path`` lists (sha256sum format, one or two lines)."""
    side = _sidecar(path)
    if side.is_dir():
        raise ValueError(f"the sidecar {side} of checkpoint {path} is a folder, not a sha256 file")
    if not side.is_file():
        return []
    out = []
    for line in side.read_text(errors="replace").splitlines():
        word = line.split()[0].lower() if line.split() else ""
        if len(word) == 64 and all(c in "0123456789abcdef" for c in word):
            out.append(word)
    return out


def save_state(path: str | os.PathLike, payload: dict[str, Any]) -> str:
    """Save a dict of tensors and plain values (weights, optimiser state, a step...) with its sidecar
    ``<name>.sha256``, so that no crash loses both the old and the new file.

    The order keeps a valid pair on disk at every moment, the old one or the new one: (1) the new
    file is written to a temporary name and its digest computed; (2) the sidecar is replaced by one
    listing the new digest and the old one; (3) the new file replaces the old; (4) the sidecar is
    replaced by one listing only the new digest. A kill at any point leaves a file whose digest the
    sidecar lists (a killed writer's temporaries are swept by the next save).

    Returns:
        The sha256 of the written file.
    """
    path = Path(path)
    check_folder(path.parent, "a folder for checkpoints")
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        old = file_sha256(path) if path.is_file() else None
        lines = [f"{digest}  {path.name}"] + ([f"{old}  {path.name}"] if old and old != digest else [])
        atomic_write(_sidecar(path), lambda f: f.write(("\n".join(lines) + "\n").encode()))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    atomic_write(_sidecar(path), lambda f: f.write(f"{digest}  {path.name}\n".encode()))
    return digest


def load_state(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, Any]:
    """Load a file written by :func:`save_state` after checking its sha256 (``weights_only``, on the CPU).

    Raises:
        FileNotFoundError: no file (or no sidecar and no ``expected_sha256``).
        ValueError: the sha256 does not match, the sidecar is not a sha256 file, or the file is not a
            readable ``torch.save`` of a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    expected = [expected_sha256.lower()] if expected_sha256 else _listed_digests(path)
    if not expected:
        raise FileNotFoundError(f"checkpoint {path} has no {_sidecar(path).name} to verify it against")
    actual = file_sha256(path)
    if actual not in expected:
        raise ValueError(
            f"checkpoint {path} is corrupt or changed: sha256 {actual[:12]}... != expected {expected[0][:12]}..."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # empty, truncated, not a torch file, unsafe pickle
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{path} matches its sha256 but is not a readable checkpoint "
                         f"({type(err).__name__}: {first})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a dict of saved state")
    return state


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None) -> str:
    """Save ``{"state_dict", "metadata"}`` of a model with its sidecar ``<name>.sha256`` (:func:`save_state`).

    Args:
        path: the ``.pt`` file to write.
        model: whose ``state_dict()`` is saved.
        metadata: a small JSON-compatible dict (config, history summary...).

    Returns:
        The sha256 of the written file (also in ``<path without .pt>.sha256``).
    """
    meta = json.loads(json.dumps(metadata or {}, default=str))  # plain types only: loads with weights_only
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "metadata": meta}
    return save_state(path, payload)


def load_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` after checking its sha256.

    Args:
        path: the ``.pt`` file.
        expected_sha256: the digest to check against; ``None`` reads the sidecar ``.sha256``.

    Returns:
        ``{"state_dict": ..., "metadata": ...}`` loaded with ``weights_only=True`` on the CPU.

    Raises:
        FileNotFoundError: no file (or no sidecar and no ``expected_sha256``).
        ValueError: the sha256 does not match, the sidecar is not a sha256 file, or the file is not a
            checkpoint (empty, truncated, not a ``torch.save`` of ``{"state_dict": {...}, "metadata": {...}}``).
    """
    path = Path(path)
    ckpt = load_state(path, expected_sha256)
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} is not a checkpoint of save_checkpoint (it holds a dict with keys "
                         f"{sorted(map(str, ckpt))[:5]}, not {{'state_dict': {{...}}, 'metadata': {{...}}}})")
    if not isinstance(ckpt.get("metadata", {}), dict):
        raise ValueError(f"{path} has metadata of type {type(ckpt['metadata']).__name__}, not a dict")
    return ckpt


@dataclass
class LoadOrTrain:
    """What :func:`load_or_train` returns."""

    model: nn.Module  # the model holding the loaded or freshly trained weights (eval mode)
    loaded: bool  # True if the weights came from a verified checkpoint
    path: Path  # the checkpoint file loaded or written
    metadata: dict[str, Any] = field(default_factory=dict)  # the metadata stored with the weights
    result: Any = None  # what train_fn returned (e.g. a TrainHistory), None when loaded

    def describe(self) -> str:
        """One line for a lesson's output: how it was trained (now, or when the loaded checkpoint was made)."""
        if not self.loaded:
            describe = getattr(self.result, "describe", None)
            return describe() if callable(describe) else f"trained, saved to {self.path.name}"
        h = self.metadata.get("history") or {}
        if not h:
            return f"loaded {self.path.name}"
        return (f"loaded {self.path.name} ({h.get('steps_done')} steps, {h.get('total_time_s', float('nan')):.1f} s "
                f"of training when it was made, final loss {h.get('final_loss', float('nan')):.4g})")


def fingerprint(*items: nn.Module | torch.Tensor | torch.Generator) -> str:
    """A short sha256 (16 hex digits) of the exact bits of models (their state dicts), tensors or generator states.

    Used in the ``config`` of :func:`load_or_train` to say what a training started from, so a checkpoint made
    from other inputs is not loaded in their place.
    """
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, torch.Generator):
            tensors = [("generator", item.get_state())]
        elif isinstance(item, nn.Module):
            tensors = sorted(item.state_dict().items())
        elif isinstance(item, torch.Tensor):
            tensors = [("tensor", item)]
        else:
            raise TypeError(f"fingerprint takes models, tensors and generators, got {type(item).__name__}")
        for key, t in tensors:
            t = t.detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def load_or_train(
    name: str,
    train_fn: Callable[[nn.Module], Any],
    *,
    model: nn.Module,
    config: dict[str, Any] | None = None,
    directory: str | os.PathLike | None = None,
    retrain: bool = False,
    generator: torch.Generator | None = None,
) -> LoadOrTrain:
    """Load ``<name>.pt`` if a verified, matching checkpoint exists; otherwise train and save it.

    Search order: ``directory`` if given, else :func:`checkpoint_dirs` (the shipped
    ``data/checkpoints`` first, then ``$TUTORLIB_DATA_DIR/checkpoints``). A candidate is used
    only if its sha256 matches its sidecar ``<name>.sha256``, its stored ``config`` equals
    ``config`` (when given), and its weights fit ``model``; any failure is reported with a
    warning and the next candidate (finally training) is tried: a corrupt file is never
    loaded silently. Training calls ``train_fn(model)``, which must leave the weights to keep
    in ``model`` (e.g. ``history.ema.copy_to(model)``); they are saved atomically (temporary
    file, fsync, ``os.replace``) with their sha256 to ``directory`` or the cache folder.

    Args:
        name: checkpoint name, e.g. ``"fm_mnist_standard"`` (include the profile when sizes differ).
        train_fn: ``model -> anything``; trains ``model`` in place.
        model: the freshly built model to fill.
        config: a small JSON-compatible dict describing the run (sizes, steps, seed); stored,
            and compared on load.
        directory: look and save only here (tests, experiments).
        retrain: ignore existing checkpoints and train.
        generator: the generator ``train_fn`` draws from, when the code around it draws from it too (a
            lesson's one seeded generator). Its state before training joins ``config`` (a checkpoint made at
            another point of the stream is another model), its state after training is stored with the
            weights, and loading restores it: the draws that follow are the same whether the model was
            trained or loaded.

    Returns:
        A :class:`LoadOrTrain` with the model (eval mode), whether it was loaded, the path,
        the metadata and ``train_fn``'s return value.
    """
    if generator is not None:
        config = {**(config or {}), "generator_in": fingerprint(generator)}
    config_plain = json.loads(json.dumps(config, default=str)) if config is not None else None
    search = [Path(directory)] if directory is not None else checkpoint_dirs()
    if not retrain:
        for folder in search:
            path = folder / f"{name}.pt"
            if not path.exists():
                continue
            try:
                ckpt = load_checkpoint(path)
            except (ValueError, OSError) as err:  # corrupt, not a checkpoint, unreadable, a folder
                warnings.warn(f"{err}; ignoring it and training {name!r} instead.", stacklevel=2)
                continue
            meta = ckpt.get("metadata", {})
            history = meta.get("history") or {}
            if history.get("complete") is False:
                warnings.warn(
                    f"checkpoint {path} stopped after {history.get('steps_done')} of {history.get('steps_requested')} "
                    f"steps ({history.get('stop_reason')}): not the model its config defines; training {name!r} "
                    "instead.", stacklevel=2)
                continue
            if config_plain is not None and meta.get("config") != config_plain:
                warnings.warn(
                    f"checkpoint {path} was made with config {meta.get('config')} but {config_plain} was asked for; "
                    f"training {name!r} instead.", stacklevel=2)
                continue
            state_after = None
            if generator is not None:
                try:
                    state_after = torch.frombuffer(bytearray(base64.b64decode(meta["generator_out"])),
                                                   dtype=torch.uint8).clone()
                except (KeyError, TypeError, ValueError) as err:
                    warnings.warn(f"checkpoint {path} has no stored generator state ({err!r}); training {name!r} "
                                  "instead.", stacklevel=2)
                    continue
            try:
                model.load_state_dict(ckpt["state_dict"])
            except (RuntimeError, TypeError, KeyError, AttributeError, ValueError) as err:
                warnings.warn(f"checkpoint {path} does not fit the model ({err}); training {name!r} instead.",
                              stacklevel=2)
                continue
            if state_after is not None:
                generator.set_state(state_after)
            model.eval()
            return LoadOrTrain(model=model, loaded=True, path=path, metadata=meta)
    result = train_fn(model)
    model.eval()
    meta: dict[str, Any] = {"name": name, "config": config_plain, "torch": torch.__version__,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    summary = getattr(result, "summary", None)  # a TrainHistory records its training summary
    if callable(summary):
        meta["history"] = summary()
    if generator is not None:
        meta["generator_out"] = base64.b64encode(generator.get_state().numpy().tobytes()).decode("ascii")
    target = (Path(directory) if directory is not None else data_dir() / "checkpoints") / f"{name}.pt"
    try:
        save_checkpoint(target, model, meta)
    except OSError as err:  # a folder where the file should go, a full disk: the trained model is not lost
        warnings.warn(f"trained {name!r} but could not save it to {target} ({err}); the model is returned unsaved.",
                      stacklevel=2)
    meta = json.loads(json.dumps(meta, default=str))
    return LoadOrTrain(model=model, loaded=False, path=target, metadata=meta, result=result)


class CheckpointChain:
    """The trainings of one lesson, in order, each through :func:`load_or_train` with the lesson's generator.

    A lesson that draws everything from one seeded generator and trains several models, each from the ones
    before (reflow rounds, distillation), calls the chain once per model. Every checkpoint's config holds
    the lesson's ``config`` for it, the generator's state before it (:func:`load_or_train`'s ``generator``)
    and the :func:`fingerprint` of the weights the chain returned before it; so a checkpoint is loaded only
    where training would have made it from the same inputs, and a lesson run with shipped checkpoints prints
    what the same run without them prints (but the times).

    Args:
        prefix: the checkpoints' names are ``f"{prefix}_{slug}_{profile_name}"`` (e.g. ``"l06"``), where the
            slug is the training's name in lower case with every run of other characters than letters and
            digits made one ``_`` (``"2-RF, U-shaped t"`` -> ``"2_rf_u_shaped_t"``).
        profile_name: the run-size profile (``P.name``).
        generator: the lesson's generator.
        directory: passed to :func:`load_or_train` (tests); ``None`` searches the usual folders.
    """

    def __init__(self, prefix: str, profile_name: str, generator: torch.Generator, *,
                 directory: str | os.PathLike | None = None):
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.prefix, self.profile_name, self.generator, self.directory = prefix, profile_name, generator, directory
        self.previous: str | None = None  # fingerprint of the weights the chain returned last
        self.runs: dict[str, LoadOrTrain] = {}

    def __call__(self, name: str, train_fn: Callable[[nn.Module], Any], *, model: nn.Module,
                 config: dict[str, Any] | None = None, retrain: bool = False) -> LoadOrTrain:
        """Load or train ``model`` (see :func:`load_or_train`); ``train_fn`` draws from the chain's generator."""
        if name in self.runs:
            raise ValueError(f"{name!r} is already in this chain; give every training its own name")
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        if not slug:
            raise ValueError(f"the name {name!r} has no letters or digits to name its checkpoint file by")
        full = {**(config or {}), "after": self.previous}
        run = load_or_train(f"{self.prefix}_{slug}_{self.profile_name}", train_fn, model=model, config=full,
                            directory=self.directory, retrain=retrain, generator=self.generator)
        self.previous = fingerprint(run.model)
        self.runs[name] = run
        return run

    @property
    def loaded(self) -> list[str]:
        """The names whose weights came from checkpoints."""
        return [name for name, run in self.runs.items() if run.loaded]
