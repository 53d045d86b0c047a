"""Test kit shipped with the package: builders for real resources, used by this project's
tests and available to anyone testing code built on the reconciler."""
