"""sail_core: the SAIL-Embedding library (data, model, losses, training, evaluation, export).

It never imports Airflow: DAG tasks and DVC stages are thin calls into
``sail_core.pipeline``.
"""

__version__ = "0.1.0"
