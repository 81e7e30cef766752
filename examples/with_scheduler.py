"""MetaSGD with a torch.optim.lr_scheduler: train longer than the rates were meta-trained for.

A group's ``lr`` multiplies the learned per-weight rates (default 1.0), so any scheduler works.
Safety needs none: past the artifact's trained steps MetaSGD already halves the last step's rates at
every step. Here a scheduler instead takes smaller steps from the start of the tail on, to show
the mechanism. Run: ``python examples/with_scheduler.py``.
"""

import torch
import torch.nn.functional as F

import metaopt_tuner

torch.manual_seed(0)
artifact = metaopt_tuner.pretrained("sinusoid")
model, opt = metaopt_tuner.prepare(None, artifact)
k = artifact.inner_steps

# full learned rates for the first k steps, then a multiplier decaying from 0.1
scheduler = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda step: 1.0 if step < k else 0.1 * 0.9 ** (step - k)
)

x = torch.empty(10, 1).uniform_(-5, 5)
y = 2.0 * torch.sin(x - 0.5)
x_test = torch.linspace(-5, 5, 200).unsqueeze(1)
y_test = 2.0 * torch.sin(x_test - 0.5)

for step in range(1, 31):
    multiplier = opt.param_groups[0]["lr"]  # what this step uses
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()
    scheduler.step()
    if step <= k + 1 or step % 5 == 0:
        with torch.no_grad():
            test_mse = F.mse_loss(model(x_test), y_test).item()
        print(f"step {step:2d}  lr multiplier {multiplier:.3f}  test MSE {test_mse:.4f}")

# the optimizer's state (learned rates, step counts) checkpoints like any other optimizer's
checkpoint = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": scheduler.state_dict()}
print("checkpoint keys:", sorted(checkpoint["opt"]["state"][0]))
