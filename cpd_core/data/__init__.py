"""Datasets: QM9, Materials Project crystals and the user's own structure files, as `StructureSet`s.

Stage: data (stage 1 of 5).
"""

from cpd_core.data.composition import composition_matrix
from cpd_core.data.registry import DatasetInfo, list_datasets, load_dataset
from cpd_core.data.structures import StructureSet

__all__ = ["StructureSet", "composition_matrix", "DatasetInfo", "list_datasets", "load_dataset"]
