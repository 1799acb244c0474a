"""Code that runs inside Triton's python backend (numpy<2, onnxruntime, tokenizers; no torch).

The repository writer copies these files into each model version folder.
``embedder.py`` is also imported in-process as the onnxruntime reference for
parity checks, so both sides run one code.
"""
