"""Coupling tensors of e3nn 'uvu' tensor products, shared by the fast convolutions of MACE and SevenNet.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations


def path_coupling(tp, paths: list[int]):
    """For instructions `paths` of e3nn TensorProduct `tp` that read the same node irrep (dimension d1): the
    coupling C [in2 dim, d1, K] (float64) with out_p[k] = sum_i x[i] (Y @ C)[i, k] for each path's columns, i.e. the
    path's Wigner 3j symbol times e3nn's path weight, side by side in the order given; and each path's first
    column in K (its width is 2 l_out + 1)."""
    import torch
    from e3nn import o3

    ir1, ir2, irout = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
    d1 = ir1[tp.instructions[paths[0]].i_in1].ir.dim
    widths = [irout[tp.instructions[p].i_out].ir.dim for p in paths]
    coupling = torch.zeros(ir2.dim, d1, sum(widths), dtype=torch.float64)
    in2_slices, firsts, column = ir2.slices(), [], 0
    for p, width in zip(paths, widths):
        ins = tp.instructions[p]
        l1, l2, l3 = ir1[ins.i_in1].ir.l, ir2[ins.i_in2].ir.l, irout[ins.i_out].ir.l
        w3j = ins.path_weight * o3.wigner_3j(l1, l2, l3, dtype=torch.float64)  # [i, j, k]
        coupling[in2_slices[ins.i_in2], :, column:column + width] = w3j.permute(1, 0, 2)
        firsts.append(column)
        column += width
    return coupling, firsts
