"""The study layer: tidy result tables for the pages (`analysis`), the paper's experiments
(`experiments`) and the written report (`report`), all built on the representations and the engine.

Stage: study (stage 5 of 5).
"""
