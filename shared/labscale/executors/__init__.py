"""Executors run a plan: `local` (subprocesses on this machine); kubernetes/argo render Jobs. Before
any run starts, each puts the study's files and the run specs in the store (`publish`)."""
