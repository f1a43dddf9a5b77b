"""ocr-ft: a Dagster graph that fine-tunes GLM-OCR with LoRA for Korean financial table recognition.

Domain code (``tables``, ``sources``, ``render``, ``images``, ``dataset``, ``train``, ``evaluate``) is plain
Python; the Dagster layer (``defs``, ``resources``, ``definitions``) only wires it.
"""

__version__ = "0.1.0"
