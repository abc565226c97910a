"""Appendix A's training as a script: the MNIST recipe on several processes with DistributedDataParallel.

    torchrun --standalone --nproc_per_node=2 scripts/train_mnist_ddp.py --profile smoke --out runs/ddp   # 2 CPU processes
    torchrun --standalone --nproc_per_node=4 scripts/train_mnist_ddp.py --profile full --out runs/ddp    # 4 GPUs (NCCL)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        scripts/train_mnist_ddp.py --profile full --out runs/ddp                                  # 2 machines x 8 GPUs

Every process trains on its share of each global batch (``tutorlib.distributed``); rank 0 logs,
checkpoints to ``OUT/state.pt`` every ``--checkpoint-every`` steps (atomic, sha256-verified), and at
the end saves the EMA weights to ``OUT/model.pt`` and scores a few guided digits with the judge.
If a process dies, torchrun stops the job with a non-zero exit; run the same command with
``--resume`` to continue from the last checkpoint. Without torchrun it runs as one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from tutorlib.checkpoints import save_checkpoint
    from tutorlib.device import profile, set_threads
    from tutorlib.distributed import init_distributed, train_distributed
    from tutorlib.mnist import load_mnist
    from tutorlib.recipes import MNISTRecipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, help="smoke, standard or full (default: TUTORLIB_PROFILE)")
    ap.add_argument("--out", type=Path, required=True, help="folder for state.pt (checkpoints) and model.pt")
    ap.add_argument("--steps", type=int, default=None, help="override the profile's steps")
    ap.add_argument("--batch", type=int, default=None, help="override the global batch")
    ap.add_argument("--channels", type=int, default=None, help="override the model width")
    ap.add_argument("--limit", type=int, default=None, help="use the first LIMIT training digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    ap.add_argument("--device", default=None, help="'cpu' forces gloo on CPU processes")
    ap.add_argument("--evaluate", type=int, default=0, help="digits rank 0 generates and judges at the end")
    ap.add_argument("--fail-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests: a rank dies here
    ap.add_argument("--fail-rank", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--save-every-rank", action="store_true", help=argparse.SUPPRESS)  # tests: compare the copies
    args = ap.parse_args(argv)

    set_threads()
    run = init_distributed(args.device)
    P = profile(args.profile)
    recipe = MNISTRecipe.from_profile(P)
    changes = {k: v for k, v in (("steps", args.steps), ("batch", args.batch), ("base_channels", args.channels))
               if v is not None}
    if "steps" in changes:
        changes["warmup_steps"] = min(recipe.warmup_steps, max(1, changes["steps"] // 10))
    recipe = recipe.replace(**changes)
    images, labels = load_mnist("train", limit=args.limit if args.limit is not None else P.mnist_limit,
                                progress=run.is_main)

    def on_step(step: int) -> None:
        if args.fail_at_step is not None and step == args.fail_at_step and run.rank == args.fail_rank:
            print(f"[rank {run.rank}] stopping on purpose at step {step}", flush=True)
            sys.stdout.flush()
            os._exit(17)  # a process that dies without cleaning up, like a lost machine

    if run.is_main:
        print(f"{run.world} process(es), backend {run.backend}, device {run.device}; global batch {recipe.batch} "
              f"({recipe.batch // run.world} per process), {recipe.steps} steps", flush=True)
    model, ema_model, summary = train_distributed(recipe, images, labels, run, out=args.out, seed=args.seed,
                                                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                                                  on_step=on_step)
    if args.save_every_rank:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out / f"rank{run.rank}.pt")
    if run.is_main:
        save_checkpoint(args.out / "model.pt", ema_model, {"recipe": dataclasses.asdict(recipe), **summary})
        if args.evaluate:
            from tutorlib.judge import judge_accuracy, load_judge
            from tutorlib.recipes import sample_digits

            y = torch.arange(10).repeat_interleave(max(1, args.evaluate // 10)).to(run.device)
            digits = sample_digits(ema_model, y, w=recipe.guidance, nfe=recipe.nfe,
                                   generator=torch.Generator().manual_seed(args.seed))
            summary["judge_accuracy"] = judge_accuracy(digits, y, load_judge())
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary), flush=True)
    run.barrier()
    if run.backend is not None:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
