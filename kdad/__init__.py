"""kdad: a reproducible benchmark of Multiresolution Knowledge Distillation for anomaly detection."""

__version__ = "0.1.0"
