"""edgesdk.memory: how much memory a model needs on a runtime, per precision, at a batch x sequence.

The export's memory stage (every target gets one in its manifest) and `edgesdk plan` both use it: weight bytes by
kind, the peak of activations from liveness over the graph with inferred shapes, and each runtime's own way of
holding a model (`RuntimeModel`, carried by each backend module as `BACKEND.memory`). It imports no backend.
"""
