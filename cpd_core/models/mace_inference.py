"""An inference-time form of MACE's symmetric contraction, with the element weights folded into the coupling tensors.

MACE's `Contraction` computes, for every atom b of element e and channel c,

    out[b, c] = sum_i x[b,c,i] (... (sum_k U_nu[..., i, k] W_nu[e, k, c] + ...) ...)

and its optimised einsum path re-multiplies the coupling tensors U_nu (e.g. 16 x 16 x 16 x 23 for correlation 3)
with the per-element weights W_nu for every atom. The weights are fixed at inference time, so `FoldedContraction`
multiplies them once, T_nu[e] = U_nu . W_nu[e], and then contracts each element's atoms with their features only:
the same sums in a different order (float rounding differs; the tests compare with mace's own forward). It runs
under `torch.no_grad`, only inside the `fast_inference` context used by `cpd_core.models.mace` for extraction;
the model's own forward (and so its ASE calculator) is left untouched outside it.
"""

from __future__ import annotations

from cpd_core.models.base import temporary_forwards


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


def fast_inference(model):
    """A context in which every symmetric contraction of `model` runs as a FoldedContraction (built once per model
    and kept on it); the model's own forwards are restored afterwards."""
    contractions = [c for product in model.products for c in product.symmetric_contractions.contractions]
    folded = getattr(model, "_cpd_folded_contractions", None)
    if folded is None:
        folded = [FoldedContraction(c) for c in contractions]
        object.__setattr__(model, "_cpd_folded_contractions", folded)
    return temporary_forwards(dict(zip(contractions, folded)))
