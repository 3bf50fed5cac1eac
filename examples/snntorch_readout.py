"""Make the readout of a trained snnTorch model globally optimal with cvxsnn.

Trains a small snnTorch network on FIRST-LAST-XOR for a few surrogate-gradient
epochs, then keeps its hidden layers and replaces its readout by the
certified optimum of the convex program (SG-CVX), and writes the result back
as an snnTorch model.

    python examples/snntorch_readout.py
"""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

from cvxsnn.interop.snntorch import fit_readout, to_snntorch
from cvxsnn.tasks import make_task

torch.manual_seed(0)
task = make_task("xor", steps=6, n_train=1000, n_val=200, n_test=1000, seed=0)
x_tr, y_tr = task.train.x, task.train.targets[-1, :, 0]
x_te, y_te = task.test.x, task.test.targets[-1, :, 0]

# A plain snnTorch model: Linear + Leaky(subtract) layers, deeper Linears without bias.
model = nn.Sequential(
    nn.Linear(2, 64),
    snn.Leaky(beta=0.99),
    nn.Linear(64, 64, bias=False),
    snn.Leaky(beta=0.99),
    nn.Linear(64, 2),
)


def run(m: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """snnTorch time loop; returns the readout at the last step, shape (B, 2)."""
    mems: dict[int, torch.Tensor] = {}
    h = None
    for t in range(x.shape[0]):
        h = x[t]
        for i, layer in enumerate(m):
            if isinstance(layer, nn.Linear):
                h = layer(h)
            else:
                h, mems[i] = layer(h, mems.get(i, torch.zeros_like(h)))
    return h


opt = torch.optim.Adam(model.parameters(), lr=5e-3)
for _epoch in range(5):
    for idx in torch.randperm(x_tr.shape[1]).split(100):
        loss = nn.functional.cross_entropy(run(model, x_tr[:, idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
with torch.no_grad():
    acc_sg = (run(model, x_te).argmax(1) == y_te).float().mean().item()

# SG-CVX in three lines: keep the hidden layers, certified optimal readout, back to snnTorch.
fit = fit_readout(model, x_tr, y_tr)
snn_model = to_snntorch(fit.net)
acc_cvx = (
    (fit.net.predict(x_te.double(), steps=[x_te.shape[0] - 1])[0, :, 0] == y_te).float().mean()
)

with torch.no_grad():
    same = torch.allclose(snn_model(x_te)[-1], fit.net(x_te, steps=[x_te.shape[0] - 1])[0])
print(f"snnTorch SG readout     test accuracy {acc_sg:.4f}")
print(f"cvxsnn optimal readout  test accuracy {float(acc_cvx):.4f}")
s = fit.summary()
print(
    f"certificate: gap {s['gap']:.2e} (relative {s['rel_gap']:.2e} <= tol {s['tol']:.0e}: "
    f"{s['certified']}), rho {s['rho']:.3e}, support {s['support_size']} of {s['P']} atoms"
)
print(f"written back to snnTorch with identical outputs: {same}")
