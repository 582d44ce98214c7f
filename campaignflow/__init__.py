"""campaignflow: marketing campaigns run as Prefect flows.

The core package holds the plain-Python rules (spec, store, approval policy,
timeline and KPI math) and imports no Prefect; blocks/, tasks/, flows/ and
deployments/ sit on top of it, and the app (campaignflow/app/: the CLI and the
web app) on top of them all. See docs/architecture.md.
"""

__version__ = "0.1.0"
