"""SO3Net's convolution and tensor product re-implemented for extraction with dense Clebsch-Gordan
tensors (`dense_convolution`, `dense_product`): the same sums as matgl's modules, taken as batched matrix
products over per-molecule pair tensors. Stage 2 (models); serves `cpd_core.models.so3net`.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations


def dense_convolution(conv, layout):
    """A forward function equivalent to matgl's `SO3Convolution.forward` for a batch of molecules whose edges join
    distinct atom pairs (no periodic images).

    y_i[s, f] = sum_{s1, s2} C[s1, s2, s] sum_j W_ij[l(s1), f] Y_ij[s1] x_j[s2, f]
              = sum_{s1, j} B_j[s, s1, f] P_ji[s1, f],  P_ji = W_ij[l(s1)] Y_ij[s1],  B_j = C contracted with x_j.
    The radial filters W and harmonics Y are placed into per-molecule pair tensors laid out [f, molecule, s1, j, i]
    (the pair index innermost, so building P is a contiguous broadcast product), and the neighbour sum is one
    batched matrix product per molecule and channel, [s, (s1 j)] @ [(s1 j), i]. Both orientations give the same
    sums; this one keeps the matrix product's output rows at the molecule's size instead of the 9 components, about
    2.5x faster on 2 cores. layout = (molecule, local index) of each atom, number of molecules, most atoms in one
    molecule, and each edge's cell (molecule, j, i) in the flattened pair tensors (j = idx_j, i = idx_i)."""
    import torch
    from matgl.utils.so3 import sh_indices

    n_sh = (conv.lmax + 1) ** 2
    cg = torch.zeros(n_sh, n_sh, n_sh, dtype=conv.clebsch_gordan.dtype)
    cg.index_put_((conv.idx_in_1, conv.idx_in_2, conv.idx_out), conv.clebsch_gordan, accumulate=True)
    cg_by_s2 = cg.permute(2, 0, 1).reshape(n_sh * n_sh, n_sh)           # [(s s1), s2]
    l_of_component = sh_indices(conv.lmax)[0].tolist()
    blocks = [(l, l_of_component.index(l), l_of_component.index(l) + 2 * l + 1) for l in range(conv.lmax + 1)]
    molecule, local, n_molecules, n_max, pair = layout
    n_pairs = n_molecules * n_max * n_max
    n_l = conv.lmax + 1

    def forward(x, radial_ij, dir_ij, cutoff_ij, idx_i, idx_j):  # idx_i, idx_j: the edges `pair` already places
        n_feat = x.shape[-1]
        W = conv.filternet(radial_ij) * cutoff_ij                           # [edges, (l f)]
        W_pairs = x.new_zeros(n_l * n_feat, n_pairs).index_copy_(1, pair, W.T)
        W_pairs = W_pairs.view(n_l, n_feat, n_molecules, 1, n_max, n_max)   # [l, f, b, 1, j, i]
        Y_pairs = x.new_zeros(n_sh, n_pairs).index_copy_(1, pair, dir_ij.T)
        Y_pairs = Y_pairs.view(n_sh, n_molecules, n_max, n_max).transpose(0, 1)  # [b, s1, j, i]
        P = x.new_empty(n_feat, n_molecules, n_sh, n_max, n_max)           # [f, b, s1, j, i]
        for l, start, stop in blocks:
            torch.mul(W_pairs[l], Y_pairs[None, :, start:stop], out=P[:, :, start:stop])
        dense_x = x.new_zeros(n_molecules, n_max, n_sh, n_feat)             # [b, j, s2, f]
        dense_x[molecule, local] = x
        coupled = torch.matmul(cg_by_s2.to(x.dtype), dense_x.permute(3, 0, 2, 1))  # [f, b, (s s1), j]
        y = torch.bmm(coupled.view(-1, n_sh, n_sh * n_max), P.view(-1, n_sh * n_max, n_max))  # [(f b), s, i]
        y = y.view(n_feat, n_molecules, n_sh, n_max).permute(1, 3, 2, 0)   # [b, i, s, f]
        return y.reshape(n_molecules * n_max, n_sh, n_feat).index_select(0, molecule * n_max + local)

    return forward


def dense_product(product):
    """A forward function equivalent to matgl's `SO3TensorProduct.forward` (per atom, y[s, f] = sum_{s1, s2}
    C[s1, s2, s] x1[s1, f] x2[s2, f]), with the Clebsch-Gordan coefficients as a dense matrix: x2 is coupled by one
    matrix product, then multiplied with x1 and summed, instead of gathering every non-zero coefficient's pair of
    components per atom."""
    import torch

    n1, n2 = int(product.idx_in_1.max()) + 1, int(product.idx_in_2.max()) + 1
    n_out = int(product._dim_out)
    cg = torch.zeros(n1, n_out, n2, dtype=product.clebsch_gordan.dtype)
    cg.index_put_((product.idx_in_1, product.idx_out, product.idx_in_2), product.clebsch_gordan, accumulate=True)
    coupling = cg.reshape(n1 * n_out, n2)                                  # [(s1 s), s2]

    def forward(x1, x2):
        coupled = torch.matmul(coupling.to(x2.dtype), x2[:, :n2])          # [atoms, (s1 s), F]
        coupled = coupled.view(x2.shape[0], n1, n_out, x2.shape[-1])
        return (coupled * x1[:, :n1, None, :]).sum(1)

    return forward
