"""Launchers: a local multi-worker cluster, GCP (Dataflow, Vertex AI, GCE VMs) and AWS (EC2).

See infra/README.md. Every launcher prints its exact requests with --dry_run.
"""
