"""lm-evaluation-harness task definitions llmforge ships (YAML in lm_eval's format)."""
