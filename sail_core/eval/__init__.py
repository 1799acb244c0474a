"""Evaluation: Recall@k retrieval metrics, trained vs baseline, report and plot."""
