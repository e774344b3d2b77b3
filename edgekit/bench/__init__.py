"""Benchmarking: accuracy through a maintained COCO evaluator, timing harness, device info, reports."""
