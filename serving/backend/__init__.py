"""Code that runs inside Triton's python backend (numpy<2, onnxruntime, tokenizers; no torch).

The repository writer copies these files into each model version folder.
``omni_embedding.py`` (the omni model) and ``embedding.py`` (the issue-2 text
model) are also imported in-process as the onnxruntime references for parity
checks, so both sides run one code.
"""
