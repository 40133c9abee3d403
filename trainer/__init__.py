"""Trains and runs Transformer models on the preprocessed TFRecords."""
