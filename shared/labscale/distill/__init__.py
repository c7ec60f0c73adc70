"""Distillation (seed 002): a teacher cell labels the train split, Confident Learning filters the
labels, a small encoder classifier (the student) is fine-tuned on them and answers the test split."""
