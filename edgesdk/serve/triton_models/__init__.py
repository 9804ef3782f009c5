"""Triton Python-backend models, copied verbatim into a model repository by `edgesdk triton`.

They run inside Triton's Python backend, which provides `triton_python_backend_utils`; they need numpy and
tokenizers there and import nothing from edgesdk.
"""
