"""Radius graphs of many molecules at once, in torch: every ordered pair of atoms of the same structure within a
cutoff, with no Python loop over structures. Used by the adapters whose packages would otherwise build one graph
per molecule (PyG models, MACE, SO3Net); periodic structures keep each package's own neighbour list. Structures
with more than LARGE_MOLECULE atoms take their edges from ASE's neighbour list (a cell list) instead, as all
pairs would cost O(n^2) memory.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

LARGE_MOLECULE = 400  # atoms; the one threshold of every adapter that builds molecule graphs from all pairs


def radius_edges(pos, batch, cutoff: float, loop: bool):
    """All ordered pairs (j, i) of atoms in the same structure closer than `cutoff` (i != j unless `loop`).

    pos (N, 3) float, batch (N,) long with each structure's atoms contiguous and in order.
    Returns edge_index (2, E) long, with both directions of every pair, as PyG's `radius_graph` does; the edges
    are listed by i, then j (the second row is sorted)."""
    import torch

    large = torch.bincount(batch) > LARGE_MOLECULE
    if not bool(large.any()):
        return _all_pairs(pos, batch, cutoff, loop)
    in_large = large[batch]
    small_atoms = torch.nonzero(~in_large).view(-1)
    parts = [small_atoms[_all_pairs(pos[small_atoms], batch[small_atoms], cutoff, loop)]]
    for structure in torch.nonzero(large).view(-1).tolist():
        atoms = torch.nonzero(batch == structure).view(-1)
        parts.append(atoms[_neighbour_list(pos[atoms], cutoff, loop)])
    edges = torch.cat(parts, dim=1)
    order = torch.argsort(edges[1] * len(pos) + edges[0])
    return edges[:, order]


def _all_pairs(pos, batch, cutoff: float, loop: bool):
    """radius_edges by testing every pair of atoms of each structure."""
    import torch

    n = pos.shape[0]
    counts = torch.bincount(batch)
    starts = torch.cumsum(counts, 0) - counts
    per_atom = counts[batch]                                    # size of each atom's structure
    i = torch.repeat_interleave(torch.arange(n, device=pos.device), per_atom)
    first = torch.repeat_interleave(torch.cumsum(per_atom, 0) - per_atom, per_atom)
    j = torch.repeat_interleave(starts[batch], per_atom) + torch.arange(len(i), device=pos.device) - first
    d = (pos[j] - pos[i]).norm(dim=-1)
    keep = d < cutoff
    if not loop:
        keep &= i != j
    return torch.stack([j[keep], i[keep]])


def _neighbour_list(pos, cutoff: float, loop: bool):
    """radius_edges of one structure (no periodic images) from ASE's neighbour list."""
    import ase
    import numpy as np
    import torch
    from ase.neighborlist import neighbor_list

    i, j = neighbor_list("ij", ase.Atoms(positions=pos.detach().cpu().double().numpy(), pbc=False), cutoff)
    if loop:
        i, j = np.concatenate([i, np.arange(len(pos))]), np.concatenate([j, np.arange(len(pos))])
    return torch.stack([torch.from_numpy(j), torch.from_numpy(i)]).long().to(pos.device)
