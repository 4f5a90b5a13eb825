"""Evaluation stage: few-label fine-tuning, test metrics with patient-level intervals, embeddings,
the label-efficiency experiment and model export."""
