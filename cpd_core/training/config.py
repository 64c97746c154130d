"""Training settings of the zoo: architectures, targets and their readouts, default hyperparameters, file names.

Stage: training (the zoo; feeds models).
"""

ARCHS = ("mace", "visnet", "schnet")
ARCH_NAMES = {"mace": "MACE", "visnet": "ViSNet", "schnet": "SchNet"}
TARGETS = {"gap": "mean", "U0": "sum"}  # target -> readout (intensive: mean, extensive: sum)
ELEMENTS = ("H", "C", "N", "O", "F")
Z = (1, 6, 7, 8, 9)
STATE = "train_state.pt"
CARD = "card.json"
CARD_MD = "CARD.md"
MACE_WEIGHTS = "model.model"
N_REFERENCE = 20  # test molecules whose predictions are stored in the card (for tests/training/test_zoo.py)
EVAL_BATCH = 64
PATIENCE = 10

DEFAULTS = {
    "mace": dict(hidden_irreps="32x0e+32x1o", num_interactions=2, r_max=5.0, max_ell=2, correlation=2,
                 num_bessel=8, num_polynomial_cutoff=5, mlp_irreps="16x0e", radial_mlp=[32, 32, 32]),
    "visnet": dict(lmax=1, hidden_channels=64, num_layers=3, num_heads=8, num_rbf=32, cutoff=4.0),
    "schnet": dict(hidden_channels=64, num_filters=64, num_interactions=4, num_gaussians=50, cutoff=5.0),
}
BATCH_SIZE = {"mace": 32, "visnet": 32, "schnet": 32}
LR = {"mace": 5e-3, "visnet": 1e-3, "schnet": 1e-3}
