"""PaiNN (Schütt, Unke & Gastegger, ICML 2021), written on torch-geometric's `MessagePassing`.

No maintained PaiNN ships for this torch (schnetpack pins its own stack), so the network is written here from the
paper: per atom a scalar state s (F) and a vector state v (3, F); each interaction is a message block (continuous
filter on sin(n pi r / r_c) / r radial features times a cosine cutoff, vectors from neighbours' vectors and the
unit bond direction) followed by an update block (scalar-vector mixing through <U v, V v> and ||V v||), both added
to the running state. The readout is a two-layer MLP per atom, summed or averaged over the molecule.

`PaiNN.states(z, pos, batch)` returns the running state after the embedding (scalars only; vectors start at zero)
and after every interaction (message + update): states, not increments. `forward` is the model's prediction.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from cpd_core.models.graphs import radius_edges
from cpd_core.models.property_readout import init_scale_shift, scale_shift_pool

NORM_EPS = 1e-8  # inside the square root of ||V v||, so its gradient stays finite at v = 0


def sinc_basis(r: torch.Tensor, n_rbf: int, cutoff: float) -> torch.Tensor:
    """sin(n pi r / r_c) / r for n = 1..n_rbf (PaiNN's radial features), shape (E, n_rbf)."""
    n = torch.arange(1, n_rbf + 1, device=r.device, dtype=r.dtype)
    return torch.sin(n * math.pi * r.unsqueeze(-1) / cutoff) / r.unsqueeze(-1)


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    return 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0) * (r < cutoff).to(r.dtype)


class PaiNNMessage(MessagePassing):
    """Message block: ds_i = sum_j phi_s, dv_i = sum_j (v_j * phi_vv + phi_vs * r_ij / |r_ij|)."""

    def __init__(self, hidden: int, n_rbf: int):
        super().__init__(aggr="add")
        self.hidden = hidden
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.filter = nn.Linear(n_rbf, 3 * hidden)

    def forward(self, s, v, edge_index, rbf, fcut, unit):
        n = s.shape[0]
        out = self.propagate(edge_index, x=self.phi(s), v=v.reshape(n, -1), w=self.filter(rbf) * fcut.unsqueeze(-1),
                             unit=unit)
        return out[:, :self.hidden], out[:, self.hidden:].reshape(n, 3, self.hidden)

    def message(self, x_j, v_j, w, unit):
        ds, dvv, dvs = torch.split(x_j * w, self.hidden, dim=-1)
        dv = v_j.reshape(-1, 3, self.hidden) * dvv.unsqueeze(1) + dvs.unsqueeze(1) * unit.unsqueeze(-1)
        return torch.cat([ds, dv.reshape(-1, 3 * self.hidden)], dim=-1)


class PaiNNUpdate(nn.Module):
    """Update block: dv = a_vv * U v, ds = a_sv * <U v, V v> + a_ss with a = MLP(s, ||V v||)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.U = nn.Linear(hidden, hidden, bias=False)
        self.V = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s, v):
        Uv, Vv = self.U(v), self.V(v)
        norm = torch.sqrt((Vv ** 2).sum(dim=1) + NORM_EPS)
        a_vv, a_sv, a_ss = torch.split(self.mlp(torch.cat([s, norm], dim=-1)), self.hidden, dim=-1)
        return a_sv * (Uv * Vv).sum(dim=1) + a_ss, a_vv.unsqueeze(1) * Uv


class PaiNN(nn.Module):
    """PaiNN for one molecular property: per-atom MLP readout, `readout` "add" or "mean", then * std + mean
    (+ per-element `atomref` for extensive targets), as torch-geometric's SchNet does."""

    def __init__(self, hidden_channels=128, num_interactions=3, num_rbf=20, cutoff=5.0, readout="add",
                 mean=0.0, std=1.0, atomref=None, max_z=100):
        super().__init__()
        self.hidden, self.cutoff, self.num_rbf, self.readout = hidden_channels, float(cutoff), num_rbf, readout
        self.embedding = nn.Embedding(max_z, hidden_channels)
        self.messages = nn.ModuleList(PaiNNMessage(hidden_channels, num_rbf) for _ in range(num_interactions))
        self.updates = nn.ModuleList(PaiNNUpdate(hidden_channels) for _ in range(num_interactions))
        self.head = nn.Sequential(nn.Linear(hidden_channels, hidden_channels // 2), nn.SiLU(),
                                  nn.Linear(hidden_channels // 2, 1))
        init_scale_shift(self, mean, std, atomref, max_z)

    def _graph(self, pos, batch):
        edge_index = radius_edges(pos, batch, self.cutoff, loop=False)
        j, i = edge_index
        vec = pos[i] - pos[j]
        r = vec.norm(dim=-1)
        return edge_index, sinc_basis(r, self.num_rbf, self.cutoff), cosine_cutoff(r, self.cutoff), vec / r.unsqueeze(-1)

    def states(self, z, pos, batch) -> dict:
        """layer name -> running state: `embedding` (s), `interaction_k` ((s, v)) after message + update k."""
        s = self.embedding(z)
        v = torch.zeros(s.shape[0], 3, self.hidden, dtype=s.dtype, device=s.device)
        graph = self._graph(pos, batch)
        states = {"embedding": s}
        for k, (message, update) in enumerate(zip(self.messages, self.updates)):
            ds, dv = message(s, v, graph[0], *graph[1:])
            s, v = s + ds, v + dv
            ds, dv = update(s, v)
            s, v = s + ds, v + dv
            states[f"interaction_{k + 1}"] = (s, v)
        return states

    def head_readout(self, s, z, batch):
        """The output head on the last scalar state: per-atom MLP, scale and shift, atomref, pooled."""
        return scale_shift_pool(self, self.head(s), z, batch, self.readout)

    def forward(self, z, pos, batch):
        s, _ = self.states(z, pos, batch)[f"interaction_{len(self.messages)}"]
        return self.head_readout(s, z, batch)


def painn_to_e3nn(s, v):
    """PaiNN state (s (N, F), v (N, 3, F)) -> (N, F + 3F) in e3nn's layout "Fx0e+Fx1o": per channel the Cartesian
    (x, y, z), which is e3nn's 1o basis (its D_from_matrix of 1o is the rotation matrix itself)."""
    return torch.cat([s, v.transpose(1, 2).reshape(s.shape[0], -1)], dim=1)
