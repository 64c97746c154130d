"""CHGNet's convolutions re-implemented for extraction: gated MLPs split by input block (`SplitGatedMLP`),
messages summed per owner by an embedding_bag (`Owners`), and the atom / bond convolutions and angle update
built on them. Exact rearrangements of CHGNet's own modules (only the float summation order differs).
Stage 2 (models); serves `cpd_core.models.chgnet`.

Stage: models (stage 2 of 5).
"""

from __future__ import annotations

# Which input blocks of a split gated MLP are rows of which table: AtomConv's input is [centre atom, bond,
# neighbour atom] per directed edge; BondConv's and AngleUpdate's is [bond i, bond j, angle, centre atom] per angle,
# with the angle block (2) given row by row.
ATOM_CONV_BLOCKS = (("atom", (0, 2)), ("bond", (1,)))
ANGLE_BLOCKS = (("bond", (0, 1)), ("atom", (3,)))
ANGLE_DENSE_BLOCK = 2


class SplitGatedMLP:
    """A CHGNet GatedMLP whose input is a concatenation of equal blocks, most of them gathered rows of smaller
    tables, with the first linear layer of its core and gate MLPs split by block: each table is multiplied once
    (one matmul for all its blocks, core and gate side by side), and one embedding_bag sums the products each output
    row gathers (`gather_rows`), core rows first, then gate rows, so that both come out contiguous (strided SiLU is
    about 3x slower). Algebraically the module itself (same weights, same later layers, LayerNorms and gating);
    only the float summation order differs."""

    def __init__(self, gated, block: int, table_blocks, dense_block: int | None = None):
        import torch

        def split(mlp):
            layers = list(mlp.layers)
            first = next(k for k, layer in enumerate(layers) if isinstance(layer, torch.nn.Linear))
            if any(not isinstance(layer, torch.nn.Dropout) for layer in layers[:first]):
                raise NotImplementedError("unexpected CHGNet MLP layout")
            return layers[first], layers[first + 1:]

        (core_first, self.core_rest), (gate_first, self.gate_rest) = split(gated.mlp_core), split(gated.mlp_gate)
        n_blocks = sum(len(blocks) for _, blocks in table_blocks) + (dense_block is not None)
        if core_first.in_features != n_blocks * block or gate_first.in_features != n_blocks * block:
            raise NotImplementedError("unexpected CHGNet gated-MLP input size")
        core, gate = core_first.weight.detach(), gate_first.weight.detach()

        def part(weight, k):  # (block, hidden)
            return weight[:, k * block:(k + 1) * block].t()

        self.table_blocks = table_blocks
        self.hidden = core_first.out_features
        # per table: (block, [core | gate] per block of that table), and the first table's bias (core and gate
        # biases on its first block: every output row gathers that product once)
        self.table_weights = [torch.cat([torch.cat([part(core, k), part(gate, k)], dim=1) for k in blocks], dim=1)
                              .contiguous() for _, blocks in table_blocks]
        zeros = torch.zeros(self.hidden)
        biases = [zeros if layer.bias is None else layer.bias.detach() for layer in (core_first, gate_first)]
        self.bias = torch.cat(biases + [zeros] * (2 * len(table_blocks[0][1]) - 2))
        self.dense = (None if dense_block is None
                      else (part(core, dense_block).contiguous(), part(gate, dense_block).contiguous()))
        self.gated = gated

    @staticmethod
    def gather_rows(table_blocks, sizes: dict, indices: dict):
        """The embedding_bag input [2 x rows, gathered blocks] of a split MLP with this block layout, for one graph:
        sizes[table] = its number of rows, indices[table, block] = the table row each output row takes for that
        block. Rows of the product table: per table, per table row, per block, core then gate."""
        import torch

        columns, base = ([], []), 0
        for name, blocks in table_blocks:
            per_row = 2 * len(blocks)
            for j, k in enumerate(blocks):
                position = indices[name, k] * per_row + (base + 2 * j)
                columns[0].append(position)
                columns[1].append(position + 1)
            base += sizes[name] * per_row
        return torch.cat([torch.stack(columns[0], dim=1), torch.stack(columns[1], dim=1)])

    def dense_through(self, linear):
        """Dense-block weights for the input of a bias-free linear layer whose output is the dense block (CHGNet's
        angle embedding, 31 -> 64): x @ (W^T D) = (x W^T) D, a matmul over 31 columns instead of 64."""
        if linear.bias is not None:
            raise NotImplementedError("expected a bias-free embedding")
        weight = linear.weight.detach().t()
        return tuple(weight @ d for d in self.dense)

    def __call__(self, tables: dict, rows, dense=None):
        """tables: name -> features; rows: `gather_rows` for this graph; dense: None, or (the dense block's
        features row by row, None), or (that block's input to a folded layer, weights from `dense_through`)."""
        import torch

        shapes = [(len(tables[name]), weight.shape[1]) for (name, _), weight in zip(self.table_blocks,
                                                                                    self.table_weights)]
        products = torch.empty(sum(n * width for n, width in shapes))
        start = 0
        for k, ((name, _), weight, (n, width)) in enumerate(zip(self.table_blocks, self.table_weights, shapes)):
            out = products[start:start + n * width].view(n, width)
            if k == 0:
                torch.addmm(self.bias, tables[name], weight, out=out)
            else:
                torch.mm(tables[name], weight, out=out)
            start += n * width
        pre = torch.nn.functional.embedding_bag(rows, products.view(-1, self.hidden), mode="sum")
        core, gate = pre[:len(pre) // 2], pre[len(pre) // 2:]
        if dense is not None:
            features, weights = dense
            core_dense, gate_dense = weights or self.dense
            core.addmm_(features, core_dense)
            gate.addmm_(features, gate_dense)
        for layer in self.core_rest:
            core = layer(core)
        for layer in self.gate_rest:
            gate = layer(gate)
        g = self.gated
        if g.norm is not None:
            core, gate = g.bn1(core), g.bn2(gate)
        return g.activation(core) * g.sigmoid(gate)


def _angle_mlp(split, atom_feas, bond_feas, angle_input, angle_rows):
    """The gated MLP of BondConv / AngleUpdate on cat([bond i, bond j, angle, centre atom]) per angle;
    angle_input: the split's `dense` argument, (angle features, None) or (angle bases, folded weights)."""
    return split({"bond": bond_feas, "atom": atom_feas}, angle_rows, dense=angle_input)


def _conv_output(layer, aggregated, previous, norm):
    """The common end of CHGNet's AtomConv and BondConv: optional output MLP, residual, optional LayerNorm."""
    if layer.use_mlp_out:
        aggregated = layer.mlp_out(aggregated)
    if layer.resnet:
        aggregated += previous
    return norm(aggregated) if norm is not None else aggregated


class Owners:
    """Sums of rows by owner (what CHGNet's `aggregate(..., average=False)` computes with index_add_), as an
    embedding_bag over the rows sorted by owner: the same sums, about ten times faster on this CPU."""

    def __init__(self, owners, n_owners: int):
        import torch

        self.order = torch.argsort(owners, stable=True)
        counts = torch.bincount(owners, minlength=n_owners)
        self.offsets = torch.cumsum(counts, 0) - counts

    def sum(self, rows):
        import torch

        return torch.nn.functional.embedding_bag(self.order, rows, self.offsets, mode="sum")


def atom_conv(layer, split, atom_feas, bond_feas, bond_weights, edge_rows, directed2undirected, centres: Owners):
    """CHGNet `AtomConv.forward` with the split gated MLP (input cat([centre atom, bond, neighbour atom]) per
    directed edge, gathered by `edge_rows`); `centres` sums messages per centre atom."""
    messages = split({"atom": atom_feas, "bond": bond_feas}, edge_rows)
    messages *= bond_weights.index_select(0, directed2undirected)
    return _conv_output(layer, centres.sum(messages), atom_feas, layer.atom_norm)


def bond_conv(layer, split, atom_feas, bond_feas, bond_weights, angle_input, bond_graph, angle_rows,
               bonds_i: Owners):
    """CHGNet `BondConv.forward` with the split gated MLP (angle_input as in `_angle_mlp`); `bonds_i` sums per
    bond_graph[:, 1]. The weight of bond i multiplies the sum over its angles instead of every angle (the same
    factor in every term)."""
    bond_update = _angle_mlp(split, atom_feas, bond_feas, angle_input, angle_rows)
    bond_update *= bond_weights.index_select(0, bond_graph[:, 2])
    new_bond_feas = bonds_i.sum(bond_update) * bond_weights
    return _conv_output(layer, new_bond_feas, bond_feas, layer.bond_norm)


def angle_update(layer, split, atom_feas, bond_feas, angle_feas, angle_input, angle_rows):
    """CHGNet `AngleUpdate.forward` with the split gated MLP (angle_input as in `_angle_mlp`; angle_feas for the
    residual)."""
    new_angle_feas = _angle_mlp(split, atom_feas, bond_feas, angle_input, angle_rows)
    if layer.resnet:
        new_angle_feas += angle_feas
    if layer.angle_norm is not None:
        new_angle_feas = layer.angle_norm(new_angle_feas)
    return new_angle_feas
