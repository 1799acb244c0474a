"""Serving: the Triton side of sail-embedding.

- ``runtime``: the Triton runtime environment (its own venv: numpy<2, no torch).
- ``repository``: writes a standard Triton model repository (python backend).
- ``server``: local ``tritonserver`` lifecycle (start, stop, status).
- ``promote``: load a new version, check it through Triton, roll back on failure.
- ``catalogue``: ``similar`` / ``search`` from the served version's catalogue index (its own vectors).
- ``client``: embed text, images, keyframes and audio over HTTP or gRPC with tritonclient.
- ``backend/``: the files that run *inside* Triton (``model.py``, ``embedder.py``).

Nothing here imports torch or MLflow: the pipeline (sail_core.pipeline) sets registry
aliases after these functions return.
"""
