"""Serving-side preprocessing, shared by training and the Triton python backend.

Modules here import only numpy, tokenizers and Pillow, never torch: the Triton
runtime environment has numpy<2 and no torch. The model-repository writer
copies this package next to ``model.py``.
"""
