"""Adapt the pretrained sinusoid artifact to a new curve from 10 points and plot it to a PNG.

Run: ``python examples/adapt_sinusoid_plot.py`` (writes ``sinusoid_adaptation.png``).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import metaopt_tuner  # noqa: E402

torch.manual_seed(1)
artifact = metaopt_tuner.pretrained("sinusoid")
model, opt = metaopt_tuner.prepare(None, artifact)

amplitude, phase = 4.0, 2.0
x = torch.empty(10, 1).uniform_(-5, 5)
y = amplitude * torch.sin(x - phase)
grid = torch.linspace(-5, 5, 300).unsqueeze(1)

curves = {}
with torch.no_grad():
    curves[0] = model(grid).squeeze(1)
for step in range(1, artifact.inner_steps + 1):
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()
    with torch.no_grad():
        curves[step] = model(grid).squeeze(1)

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(grid.squeeze(1), amplitude * torch.sin(grid.squeeze(1) - phase), "k-", lw=2, label="true curve")
for step, pred in curves.items():
    style = "--" if step == 0 else "-"
    ax.plot(grid.squeeze(1), pred, style, label=f"after {step} MetaSGD step(s)")
ax.scatter(x.squeeze(1), y.squeeze(1), c="red", zorder=5, label="10 support points")
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.set_title("Pretrained Meta-SGD on a new sine curve")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig("sinusoid_adaptation.png", dpi=100)
with torch.no_grad():
    mse = F.mse_loss(curves[artifact.inner_steps], amplitude * torch.sin(grid.squeeze(1) - phase))
print(f"wrote sinusoid_adaptation.png; MSE on the curve after {artifact.inner_steps} steps: {mse:.4f}")
