"""DimeNet++ (Gasteiger et al. 2020) from torch-geometric, made to run without torch-sparse and torch-cluster.

torch-geometric's `DimeNetPlusPlus.forward` builds its graph with `radius_graph` (torch-cluster) and its angle
triplets with a `SparseTensor` (torch-sparse); neither is installed. Here the same blocks (its Bessel and
spherical bases, embedding, interaction and output blocks, with their weights) run on a radius graph and triplets
computed in plain torch (`triplets`, tested against a brute-force loop).

DimeNet++ keeps its state on directed edges (messages m_ji), not on atoms, and each block's output block adds its
contribution to the prediction. The per-atom layer state exposed here is the sum of an atom's incoming messages,
h_i = sum_j m_ji, after the embedding block and after every interaction block (the interaction returns the new
message, residuals included: states, not increments). All of it is rotation invariant (Hx0e).

`DimeNetPPProperty` wraps the network for one molecular property: the per-atom sum of the output blocks, times std
plus mean (plus a per-element `atomref` for extensive targets), summed or averaged over the molecule.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.models import DimeNetPlusPlus
from torch_geometric.utils import scatter

from cpd_core.models.graphs import radius_edges
from cpd_core.models.property_readout import init_scale_shift, scale_shift_pool


def triplets(edge_index: torch.Tensor, num_nodes: int):
    """Angle triplets k -> j -> i (k != i) of a directed graph whose edges are sorted by target (as
    `radius_edges` returns them), in torch-geometric's `triplets` order and output:
    (i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji)."""
    row, col = edge_index                                       # j -> i
    if len(col) > 1 and bool((col[1:] < col[:-1]).any()):
        raise ValueError("triplets needs the edges sorted by target node (edge_index[1]).")
    in_degree = torch.bincount(col, minlength=num_nodes)
    first_in = torch.cumsum(in_degree, 0) - in_degree            # first edge whose target is each node
    per_edge = in_degree[row]                                    # edges k -> j for each edge j -> i
    idx_ji = torch.repeat_interleave(torch.arange(len(row), device=row.device), per_edge)
    start = torch.repeat_interleave(torch.cumsum(per_edge, 0) - per_edge, per_edge)
    idx_kj = torch.repeat_interleave(first_in[row], per_edge) + torch.arange(len(idx_ji), device=row.device) - start
    idx_i, idx_j, idx_k = col[idx_ji], row[idx_ji], row[idx_kj]
    keep = idx_i != idx_k
    return col, row, idx_i[keep], idx_j[keep], idx_k[keep], idx_kj[keep], idx_ji[keep]


class DimeNetPPProperty(nn.Module):
    """torch-geometric's DimeNet++ blocks for one property, with a plain-torch graph and triplets."""

    def __init__(self, hidden_channels=128, num_blocks=4, int_emb_size=64, basis_emb_size=8, out_emb_channels=256,
                 num_spherical=7, num_radial=6, cutoff=5.0, envelope_exponent=5, readout="add", mean=0.0, std=1.0,
                 atomref=None, max_z=100):
        super().__init__()
        self.net = DimeNetPlusPlus(hidden_channels=hidden_channels, out_channels=1, num_blocks=num_blocks,
                                   int_emb_size=int_emb_size, basis_emb_size=basis_emb_size,
                                   out_emb_channels=out_emb_channels, num_spherical=num_spherical,
                                   num_radial=num_radial, cutoff=cutoff, envelope_exponent=envelope_exponent)
        self.cutoff, self.readout = float(cutoff), readout
        init_scale_shift(self, mean, std, atomref, max_z)

    def _run(self, z, pos, batch):
        """(per-atom prediction P (N, 1), {layer: per-atom sum of incoming messages}), mirroring
        `DimeNet.forward` for DimeNet++ (angle at j between j->i and k->j)."""
        net, n = self.net, z.size(0)
        edge_index = radius_edges(pos, batch, self.cutoff, loop=False)
        i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = triplets(edge_index, n)
        dist = (pos[i] - pos[j]).pow(2).sum(dim=-1).sqrt()
        pos_jk, pos_ij = pos[idx_j] - pos[idx_k], pos[idx_i] - pos[idx_j]
        angle = torch.atan2(torch.cross(pos_ij, pos_jk, dim=1).norm(dim=-1), (pos_ij * pos_jk).sum(dim=-1))
        rbf = net.rbf(dist)
        sbf = net.sbf(dist, angle, idx_kj)
        x = net.emb(z, rbf, i, j)
        P = net.output_blocks[0](x, rbf, i, num_nodes=n)
        states = {"embedding": scatter(x, i, dim=0, dim_size=n, reduce="sum")}
        for k, (interaction, output) in enumerate(zip(net.interaction_blocks, net.output_blocks[1:])):
            x = interaction(x, rbf, sbf, idx_kj, idx_ji)
            P = P + output(x, rbf, i, num_nodes=n)
            states[f"interaction_{k + 1}"] = scatter(x, i, dim=0, dim_size=n, reduce="sum")
        return P, states

    def states(self, z, pos, batch) -> dict:
        return self._run(z, pos, batch)[1]

    def forward(self, z, pos, batch):
        return scale_shift_pool(self, self._run(z, pos, batch)[0], z, batch, self.readout)
