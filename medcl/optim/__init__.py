"""Optimisation helpers shared by the training and evaluation stages (learning-rate schedules)."""
