"""SevenNet's edge convolution re-implemented for extraction (`FastConvolution`): the same e3nn tensor
product as sevenn's `IrrepsConvolution`, regrouped by input irrep into batched matmuls over edge chunks.
Stage 2 (models); serves `cpd_core.models.sevennet`, which checks it against the module at load time.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

import numpy as np

from cpd_core.models.couplings import path_coupling


class FastConvolution:
    """sevenn `IrrepsConvolution` (e3nn TensorProduct with 'uvu' instructions and per-edge weights, followed by
    a scatter-sum over receiving atoms and division by the module's denominator), regrouped by input irrep.

    For input irrep block l1 (mul u, dim d1) every path (l1, l2 -> l3) is out[k, u] = path_weight * w_e[p, u] *
    sum_ij x_src[i, u] Y_e[j] C^{l1 l2 l3}[i, j, k]. B_e = Y_e @ C (all paths of l1 side by side, path weights
    folded in) is tiny per edge, so a block's messages are one batched matmul B_e (K x d1) @ x_src (d1 x u), times
    the radial weights, summed into the receiving atoms chunk by chunk (a chunk stays in cache). The K columns
    list a block's paths by output L, so the paths of one L take their weights in one broadcast product. Columns
    are put into the module's irreps_out order once per call, per atom."""

    def __init__(self, module, chunk: int = 256):
        import torch

        tp = module.convolution
        self.module = module
        self.chunk = chunk  # undirected edges per message chunk (both directions are processed)
        self.mlp_chunks = 8  # chunks per radial-MLP block (2,048 edges)
        ir1, ir2, irout = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        for ins in tp.instructions:
            if ins.connection_mode != "uvu" or not ins.has_weight or tuple(ins.path_shape) != (ir1[ins.i_in1].mul, 1):
                raise NotImplementedError(f"unsupported tensor-product instruction {ins}")
        if any(mul != 1 for mul, _ in ir2):
            raise NotImplementedError(f"unsupported filter irreps {ir2}")
        weight_offsets, offset = [], 0
        for ins in tp.instructions:
            weight_offsets.append(offset)
            offset += int(np.prod(ins.path_shape))
        by_input: dict[int, list[int]] = {}
        for n, ins in enumerate(tp.instructions):
            by_input.setdefault(ins.i_in1, []).append(n)
        in_slices, out_slices = ir1.slices(), irout.slices()
        source_col = np.full(irout.dim, -1, dtype=np.int64)
        self.groups = []
        Cs, weight_order = [], []
        col = t_offset = b_offset = 0
        for i1, members in sorted(by_input.items()):
            mul, d1 = ir1[i1].mul, ir1[i1].ir.dim
            members = sorted(members, key=lambda n: irout[tp.instructions[n].i_out].ir.dim)  # paths by output L
            C, firsts = path_coupling(tp, members)  # [ir2.dim, d1, K]
            K = C.shape[2]
            paths = []  # (first column in K, width, first weight column)
            for n, k0 in zip(members, firsts):
                ins = tp.instructions[n]
                d3 = irout[ins.i_out].ir.dim
                paths.append((k0, d3, weight_offsets[n]))
                start = out_slices[ins.i_out].start
                u, k = np.meshgrid(np.arange(mul), np.arange(d3), indexing="ij")
                source_col[start + u * d3 + k] = col + (k0 + k) * mul + u
            runs = []  # consecutive paths of one output L: (first column in K, first path, paths, width)
            for p, (k0, d3, _) in enumerate(paths):
                if runs and runs[-1][3] == d3:
                    runs[-1][2] += 1
                else:
                    runs.append([k0, p, 1, d3])
            self.groups.append(dict(start=in_slices[i1].start, stop=in_slices[i1].stop, mul=mul, d1=d1, K=K,
                                    t_start=t_offset, t_stop=t_offset + mul * d1, b_start=b_offset,
                                    b_stop=b_offset + K * d1, w_start=len(weight_order),
                                    w_stop=len(weight_order) + len(paths) * mul, n_paths=len(paths),
                                    runs=[tuple(r) for r in runs]))
            Cs.append(C.permute(0, 2, 1).reshape(ir2.dim, K * d1))
            for _, _, w0 in paths:  # this group's path weights side by side: (paths, mul)
                weight_order.extend(range(w0, w0 + mul))
            t_offset += mul * d1
            b_offset += K * d1
            col += mul * K
        assert (source_col >= 0).all() and col == irout.dim
        assert sorted(weight_order) == list(range(tp.weight_numel))
        self.source_col = torch.from_numpy(source_col)
        self.C = torch.cat(Cs, 1).float()  # filter (Y) -> B of every group, one matmul per edge chunk
        self.weight_order = torch.tensor(weight_order)
        # radial MLP with its last (linear) layer's columns put in weight_order once, so the weights come out
        # grouped; same products and sums as the module's e3nn FullyConnectedNet
        layers = list(module.weight_nn.children())
        last = layers[-1] if layers else None
        if last is not None and getattr(last, "act", "x") is None and hasattr(last, "var_out"):
            scaled = last.weight.detach() / (last.h_in * last.var_in / last.var_out) ** 0.5
            self._mlp_hidden = layers[:-1]
            self._mlp_last = scaled[:, self.weight_order].contiguous()
        else:  # not an e3nn FullyConnectedNet: run it as is and reorder its output
            self._mlp_hidden = None
            self._mlp_last = None

    def radial_weights(self, embedding):
        """The module's radial MLP on edge embeddings, columns in `weight_order`."""
        if self._mlp_hidden is None:
            return self.module.weight_nn(embedding).index_select(1, self.weight_order)
        h = embedding
        for layer in self._mlp_hidden:
            h = layer(h)
        return h @ self._mlp_last

    def __call__(self, x, edge_attr, edge_src, edge_dst, n_half: int, weights_for, ordered: bool = False):
        """Aggregated messages (atoms, irreps_out.dim) = the module's forward. The edge list is symmetric: edge
        n_half + k is edge k reversed. `weights_for(lo, hi)` gives the radial-MLP weights of undirected edges
        lo..hi-1 (both directions have the same length, so the same weights), in the module's order or, with
        `ordered`, in `weight_order` (see `radial_weights`); it is called block by block, so no (edges x weights)
        tensor is ever held."""
        import torch

        n_atoms = x.shape[0]
        # each input block transposed once per call to (atoms, d1, mul), so gathered rows feed bmm contiguously
        x_t = torch.cat([x[:, g["start"]:g["stop"]].view(n_atoms, g["mul"], g["d1"]).transpose(1, 2)
                         .reshape(n_atoms, -1) for g in self.groups], 1)
        sums = [x.new_zeros(n_atoms, g["mul"] * g["K"]) for g in self.groups]
        block = self.chunk * self.mlp_chunks
        for lo in range(0, n_half, self.chunk):
            hi = min(n_half, lo + self.chunk)
            if lo % block == 0:  # the radial MLP runs on larger blocks (better GEMMs), the messages on chunks
                w_block = weights_for(lo, min(n_half, lo + block))
                if not ordered:
                    w_block = w_block.index_select(1, self.weight_order)
            w = w_block[lo % block:lo % block + (hi - lo)]
            for s, e in ((lo, hi), (n_half + lo, n_half + hi)):
                m = e - s
                xs = x_t.index_select(0, edge_src[s:e])
                B_all = edge_attr[s:e] @ self.C
                dst = edge_dst[s:e]
                for g, out in zip(self.groups, sums):
                    mul, d1, K = g["mul"], g["d1"], g["K"]
                    X = xs[:, g["t_start"]:g["t_stop"]].view(m, d1, mul)
                    B = B_all[:, g["b_start"]:g["b_stop"]].view(m, K, d1)
                    W = w[:, g["w_start"]:g["w_stop"]].view(m, g["n_paths"], mul)  # (m, paths, mul)
                    if d1 == 1:  # scalars in: x times each path's weights, then times B (outer product)
                        XW, T = X * W, x.new_empty(m, K, mul)
                        for k0, p0, n, d3 in g["runs"]:  # the paths of one output L: one broadcast product
                            torch.mul(XW[:, p0:p0 + n, None, :], B[:, k0:k0 + n * d3].view(m, n, d3, 1),
                                      out=T[:, k0:k0 + n * d3].view(m, n, d3, mul))
                    else:
                        T = torch.bmm(B, X)  # (m, K, mul)
                        for k0, p0, n, d3 in g["runs"]:
                            T[:, k0:k0 + n * d3].view(m, n, d3, mul).mul_(W[:, p0:p0 + n, None, :])
                    out.index_add_(0, dst, T.view(m, -1))
        return torch.cat(sums, 1).index_select(1, self.source_col).div(self.module.denominator)

    def check(self, seed: int = 0) -> float:
        """Relative difference to the module's own e3nn tensor product + scatter on random inputs."""
        import torch
        from sevenn.nn.convolution import message_gather

        tp = self.module.convolution
        g = torch.Generator().manual_seed(seed)
        n_atoms, n_half = 7, 300  # more than one chunk
        x = torch.randn(n_atoms, tp.irreps_in1.dim, generator=g)
        attr = torch.randn(2 * n_half, tp.irreps_in2.dim, generator=g)
        w = torch.randn(n_half, tp.weight_numel, generator=g)
        src = torch.randint(0, n_atoms, (n_half,), generator=g)
        dst = torch.randint(0, n_atoms, (n_half,), generator=g)
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
        ref = message_gather(x, dst, tp(x[src], attr, torch.cat([w, w]))).div(self.module.denominator)
        new = self(x, attr, src, dst, n_half, lambda lo, hi: w[lo:hi])
        err = float((ref - new).abs().max() / ref.abs().max().clamp_min(1e-12))
        emb = torch.rand(50, self.module.weight_nn.hs[0], generator=g)
        ref_w = self.module.weight_nn(emb).index_select(1, self.weight_order)
        err = max(err, float((ref_w - self.radial_weights(emb)).abs().max() / ref_w.abs().max().clamp_min(1e-12)))
        if err > 1e-4:
            raise RuntimeError(f"fast convolution differs from e3nn's by {err:.2e}")
        return err
