"""cloudrun-reconciler: declarative GitOps canary rollouts on Google Cloud Run."""

__version__ = "0.1.0"
