"""The CPD engine: composition projection, probes with shuffled K-fold, Ridge fold algebra, CPD scores.

Works on plain arrays (features H, composition C, target y); knows nothing of models or datasets.

Stage: engine (stage 4 of 5).
"""
