"""The model half of llmforge in plain PyTorch (no Prefect): a GPT, its training and evaluation.

config.py (ModelConfig, presets, TrainConfig, EvalConfig; torch-free) → gpt.py (the model) →
data.py (token dataset loader) → optim.py / precision.py → train.py (`train(...)`) →
checkpoint.py → evaluate.py + hellaswag.py (`evaluate(...)`; harness.py: lm-evaluation-harness)
→ plots.py.
"""
