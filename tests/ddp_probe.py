"""`python -m tests.ddp_probe ARGV`: the demohub CLI, with every process saving the weights of the
generative networks it trains, after each step, to $DDP_PROBE<rank>.pt: the torchrun test compares them."""

import os
import sys

import torch

from apps.generative import finetune
from shared.serving import cli


def recording(step):
    def recorded(*args):
        losses = step(*args)
        weights = [p.detach() for a in args if isinstance(a, torch.nn.Module) for p in a.parameters()]
        torch.save(weights, f"{os.environ['DDP_PROBE']}{os.environ.get('RANK', '0')}.pt")
        return losses

    return recorded


finetune.gan_step, finetune.vae_step = recording(finetune.gan_step), recording(finetune.vae_step)

if __name__ == "__main__":
    sys.exit(cli.main())
