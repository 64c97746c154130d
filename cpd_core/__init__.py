"""CPD Explorer core: data, model representations, Composition Projection Decomposition and probes.

Data flows one way: structures -> model adapter -> invariants/pooling -> cache -> composition projector
-> probes with shuffled K-fold -> tidy result tables -> pages and CLI.
"""

__version__ = "0.1.0"
