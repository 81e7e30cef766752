"""MetaSGD in a plain PyTorch training loop: fit a new sine curve from 10 points.

The pretrained sinusoid artifact supplies the starting weights and a learning rate for every
weight, so there is no learning rate to choose. Run: ``python examples/plain_loop.py``.
"""

import math

import torch
import torch.nn.functional as F

import metaopt_tuner

torch.manual_seed(0)
artifact = metaopt_tuner.pretrained("sinusoid")
model, opt = metaopt_tuner.prepare(None, artifact)  # the MLP, with the learned initial weights

# a new task: y = 3 sin(x - 1), observed at 10 random points
x = torch.empty(10, 1).uniform_(-5, 5)
y = 3.0 * torch.sin(x - 1.0)
x_test = torch.linspace(-5, 5, 200).unsqueeze(1)
y_test = 3.0 * torch.sin(x_test - 1.0)

for step in range(artifact.inner_steps + 1):
    with torch.no_grad():
        test_mse = F.mse_loss(model(x_test), y_test).item()
    print(f"after {step} step(s): test MSE {test_mse:.4f}")
    if step == artifact.inner_steps:  # the rates were meta-trained for this many steps
        break
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()

assert math.isfinite(test_mse)
