"""kubescribe: deploy speech-to-text models on Kubernetes.

This top-level package holds only what every part shares: the CLI dispatcher and the base
error type. The parts live in `kubescribe_runtime`, `kubescribe_operator` and
`kubescribe_modeling`, each importable without the others' dependencies.
"""

__version__ = "0.1.0"
