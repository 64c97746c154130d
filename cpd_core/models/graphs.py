"""Radius graphs of many molecules at once, in torch: every ordered pair of atoms of the same structure within a
cutoff, with no Python loop over structures. Used by the adapters whose packages would otherwise build one graph
per molecule (PyG models, MACE, SO3Net); periodic structures keep each package's own neighbour list."""

from __future__ import annotations


def radius_edges(pos, batch, cutoff: float, loop: bool):
    """All ordered pairs (j, i) of atoms in the same structure closer than `cutoff` (i != j unless `loop`).

    pos (N, 3) float, batch (N,) long with each structure's atoms contiguous and in order.
    Returns edge_index (2, E) long, with both directions of every pair, as PyG's `radius_graph` does; the edges
    are listed by i (the second row is sorted)."""
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
