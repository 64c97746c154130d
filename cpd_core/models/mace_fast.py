"""An inference-time form of MACE's symmetric contraction, with the element weights folded into the coupling tensors.

MACE's `Contraction` computes, for every atom b of element e and channel c,

    out[b, c] = sum_i x[b,c,i] (... (sum_k U_nu[..., i, k] W_nu[e, k, c] + ...) ...)

and its optimised einsum path re-multiplies the coupling tensors U_nu (e.g. 16 x 16 x 16 x 23 for correlation 3)
with the per-element weights W_nu for every atom. The weights are fixed at inference time, so `FoldedContraction`
multiplies them once, T_nu[e] = U_nu . W_nu[e], and then contracts each element's atoms with their features only:
the same sums in a different order (float rounding differs; the tests compare with mace's own forward). It runs
under `torch.no_grad`, only inside the `fast_inference` context used by `cpd_core.models.mace` for extraction;
the model's own forward (and so its ASE calculator) is left untouched outside it.

The interaction blocks' convolution is rearranged too. e3nn's `TensorProduct` forms, for every edge, the
weighted sender channels coupled with the edge's harmonics, a [edges, channels x components] tensor that mace
then sums per receiver. `FusedConvolution` takes the per-receiver sum directly: the edges of each receiver, padded
to the largest neighbourhood, enter batched matrix products [components, edges] @ [edges, paths x channels]. It is
called through mace's own `conv_fusion` branch (the hook mace keeps for fused kernels), which passes node features
and edges instead of per-edge features.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

from contextlib import contextmanager

from cpd_core.models.base import temporary_forwards
from cpd_core.models.couplings import path_coupling


class FoldedContraction:
    """Callable replacement for one `mace.modules.symmetric_contraction.Contraction` (inference only)."""

    CHUNK = 128  # atoms per contraction step

    def __init__(self, contraction):
        import torch

        self.contraction = contraction
        correlation = contraction.correlation
        # weights_max pairs with U_correlation; weights[i] with U_(correlation - 1 - i), as in Contraction.forward
        pairs = [(correlation, contraction.weights_max)]
        pairs += [(correlation - 1 - i, w) for i, w in enumerate(contraction.weights)]
        self.folded = {}  # nu -> [elements, channels, *U_nu.shape[:-1]]
        with torch.no_grad():
            for nu, weight in pairs:
                u = contraction.U_tensors(nu)
                t = torch.tensordot(u, weight.detach(), dims=([u.dim() - 1], [1]))  # [*lead, E, C]
                lead = u.dim() - 1
                self.folded[nu] = t.permute(lead, lead + 1, *range(lead)).contiguous()
        self.correlation = correlation

    def __call__(self, x, y):
        """x: [atoms, channels, num_ell] features; y: [atoms, elements] one-hot node attributes."""
        import torch

        one_hot = bool(((y == 0) | (y == 1)).all()) and bool((y.sum(1) == 1).all())
        if not one_hot:  # not the usual one-hot attributes: use mace's own contraction
            return type(self.contraction).forward(self.contraction, x, y)
        element = y.argmax(1)
        n_atoms, channels, num_ell = x.shape
        top = self.folded[self.correlation]
        out = x.new_empty((n_atoms, channels, top[0].numel() // (channels * num_ell ** self.correlation)))
        for e in torch.unique(element).tolist():
            rows = torch.nonzero(element == e).squeeze(1)
            for chunk in rows.split(self.CHUNK):  # keeps the [C, n, M] intermediates cache-sized
                out[chunk] = self._element(e, x.index_select(0, chunk))
        return out.reshape(n_atoms, -1)

    def _element(self, e: int, x):
        """Contraction for the atoms of element e; x: their features [n, C, L]. Returns [n, C, eq]."""
        import torch

        n, channels, num_ell = x.shape
        xc = x.permute(1, 0, 2)  # [C, n, L]
        top = self.folded[self.correlation][e].reshape(channels, -1, num_ell)  # [C, M, L]
        r = torch.bmm(xc, top.transpose(1, 2))  # [C, n, M]: contracts U's last feature index
        for nu in range(self.correlation - 1, 0, -1):
            r = r + self.folded[nu][e].reshape(channels, 1, -1)
            r = (r.view(channels, n, -1, num_ell) * xc.unsqueeze(2)).sum(3)  # the next feature index
        return r.permute(1, 0, 2)


class FusedConvolution:
    """Callable replacement for an interaction's `conv_tp` (an e3nn `TensorProduct` of node features with the edge
    harmonics, 'uvu' paths with per-edge weights, as in every MACE interaction) that returns the message summed
    per receiver.

    For path p (node irrep l1, harmonic l2, output l3) and channel u:
        message[r, p, u, k] = sum_{edges e into r} sum_i w[e, p, u] x[sender(e), u, i] G_p[e, i, k],
        G_p[e, i, k] = sum_j C_p[i, j, k] Y_l2(e)[j]
    with C_p the Wigner 3j symbol of the path times e3nn's path weight. Paths that read the same node irrep share
    one batched matrix product over the receiver's (edge, i) pairs: [outputs, (edges i)] @ [(edges i), paths x
    channels]. Receivers are taken in chunks of at most MAX_PADDED padded numbers. Use `applies(tp)` to check a
    product fits."""

    MAX_PADDED = 1 << 24  # numbers in the padded tensors of one chunk of receivers (64 MB in float32)

    def __init__(self, tp):
        self.tp = tp
        self.channels = tp.irreps_in1[0].mul
        in1_slices = tp.irreps_in1.slices()
        self.groups = []  # per node irrep read: (its slice, 2 l1 + 1, its paths, coupling [in2 dim, (i, column)])
        outputs = []  # (output irrep, group, position of the path in its group, first column, width)
        self.per_slot = 1
        for i_in1 in sorted({ins.i_in1 for ins in tp.instructions}):
            paths = [p for p, ins in enumerate(tp.instructions) if ins.i_in1 == i_in1]
            coupling, firsts = path_coupling(tp, paths)  # float64, cast per call
            dim1, n_columns = coupling.shape[1:]
            for position, (p, column) in enumerate(zip(paths, firsts)):
                i_out = tp.instructions[p].i_out
                outputs.append((i_out, len(self.groups), position, column, tp.irreps_out[i_out].ir.dim))
            # numbers in one padded edge row of this group's weighted and coupled tensors (bounds a chunk's memory)
            self.per_slot = max(self.per_slot, dim1 * (len(paths) * self.channels + n_columns))
            if paths == list(range(paths[0], paths[-1] + 1)):
                paths = slice(paths[0], paths[-1] + 1)  # then the weights are taken as a view, not copied
            self.groups.append((in1_slices[i_in1], dim1, paths, coupling.reshape(tp.irreps_in2.dim, -1)))
        self.outputs = sorted(outputs)

    @staticmethod
    def applies(tp) -> bool:
        """True for the products FusedConvolution reproduces: node irreps of one multiplicity, harmonics of
        multiplicity 1, every path 'uvu' with per-edge weights, one path per output irrep."""
        from e3nn.o3 import TensorProduct

        if type(tp) is not TensorProduct or tp.shared_weights or tp.internal_weights:
            return False
        channels, outputs = tp.irreps_in1[0].mul, [ins.i_out for ins in tp.instructions]
        return (all(mul == channels for mul, _ in tp.irreps_in1) and all(mul == 1 for mul, _ in tp.irreps_in2)
                and all(mul == channels for mul, _ in tp.irreps_out)
                and sorted(outputs) == list(range(len(tp.irreps_out)))
                and all(ins.connection_mode == "uvu" and ins.has_weight and ins.path_shape == (channels, 1)
                        for ins in tp.instructions))

    def __call__(self, node_feats, edge_attrs, tp_weights, edge_index=None):
        """With edge_index (mace's fused branch): the summed message [nodes, irreps_out.dim]. Without it, the
        per-edge call of mace's unfused branch: the product's own forward."""
        import torch

        if edge_index is None:
            return type(self.tp).forward(self.tp, node_feats, edge_attrs, tp_weights)
        sender, receiver = edge_index
        n_nodes, n_edges = node_feats.shape[0], sender.numel()
        if n_nodes == 0:
            return node_feats.new_zeros((0, self.tp.irreps_out.dim))
        if n_edges and not bool((receiver[1:] >= receiver[:-1]).all()):
            order = torch.argsort(receiver, stable=True)
            sender, receiver, edge_attrs, tp_weights = (sender[order], receiver[order], edge_attrs[order],
                                                        tp_weights[order])
        counts = torch.bincount(receiver, minlength=n_nodes)
        width = max(int(counts.max()), 1)  # edges of the busiest receiver
        ends = torch.cumsum(counts, 0)
        slot = receiver * width + torch.arange(n_edges, device=receiver.device) - (ends - counts)[receiver]
        ends = ends.tolist()
        step = max(1, self.MAX_PADDED // (width * self.per_slot))  # receivers per chunk
        parts = []
        for start in range(0, n_nodes, step):
            stop = min(n_nodes, start + step)
            lo, hi = (ends[start - 1] if start else 0), ends[stop - 1]
            parts.append(self._receivers(node_feats, sender[lo:hi], slot[lo:hi] - start * width, edge_attrs[lo:hi],
                                         tp_weights[lo:hi], stop - start, width))
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def _receivers(self, node_feats, sender, slot, edge_attrs, tp_weights, n_receivers: int, width: int):
        """The summed message of n_receivers consecutive receivers from their edges (slot: each edge's row in the
        padded tensors, receiver-local)."""
        import torch

        n_edges, channels = sender.numel(), self.channels

        def padded(rows):  # [edges, ...] -> [receivers * width, ...], each receiver's edges in its own block of rows
            return rows.new_zeros(n_receivers * width, *rows.shape[1:]).index_copy_(0, slot, rows)

        weights = tp_weights.reshape(n_edges, -1, channels)                    # [edges, paths, channels]
        sums = []
        for in1, dim1, paths, coupling in self.groups:
            x = node_feats[:, in1].view(-1, channels, dim1)[sender]            # [edges, channels, i]
            picked = weights[:, paths]
            weighted = picked.new_empty(n_edges, dim1, picked.shape[1], channels)  # [edges, i, paths, channels]
            torch.mul(x.transpose(1, 2).unsqueeze(2), picked.unsqueeze(1), out=weighted)
            weighted = padded(weighted.view(n_edges, dim1, -1))                  # [., i, (paths channels)]
            coupled = padded((edge_attrs @ coupling.to(edge_attrs)).view(n_edges, dim1, -1))  # [., i, columns]
            sums.append(torch.bmm(coupled.view(n_receivers, width * dim1, -1).transpose(1, 2),
                                  weighted.view(n_receivers, width * dim1, -1)))  # [., columns, paths x channels]
        parts = [sums[g][:, column:column + dim, position * channels:(position + 1) * channels]
                 for _, g, position, column, dim in self.outputs]            # each [receivers, dim, channels]
        return torch.cat([part.transpose(1, 2).reshape(n_receivers, -1) for part in parts], dim=1)


def _replacements(model) -> dict:
    """module -> inference forward for `model`: a FoldedContraction per symmetric contraction and a
    FusedConvolution per interaction convolution that fits (built once per model and kept on it)."""
    cached = getattr(model, "_cpd_fast_forwards", None)
    if cached is None:
        contractions = [c for product in model.products for c in product.symmetric_contractions.contractions]
        cached = {c: FoldedContraction(c) for c in contractions}
        for interaction in model.interactions:
            if not hasattr(interaction, "conv_fusion") and FusedConvolution.applies(interaction.conv_tp):
                cached[interaction.conv_tp] = FusedConvolution(interaction.conv_tp)
        object.__setattr__(model, "_cpd_fast_forwards", cached)
    return cached


@contextmanager
def fast_inference(model):
    """A context in which `model` runs with the inference forwards of `_replacements`; the interactions whose
    convolution is fused take mace's `conv_fusion` branch. Everything is restored afterwards."""
    replacements = _replacements(model)
    fused = [it for it in model.interactions if it.conv_tp in replacements]
    for interaction in fused:
        object.__setattr__(interaction, "conv_fusion", True)
    try:
        with temporary_forwards(replacements):
            yield
    finally:
        for interaction in fused:
            interaction.__dict__.pop("conv_fusion", None)
