"""Executors run a plan: `local` (subprocesses on this machine); kubernetes/argo render Jobs."""
