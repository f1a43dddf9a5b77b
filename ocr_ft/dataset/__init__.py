"""The dataset stage: records, per-pair validation, dedup, categories, splits and exports."""
