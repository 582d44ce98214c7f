"""campaignflow: marketing campaigns run as Prefect flows.

The core package holds the plain-Python rules (spec, store, approval policy,
timeline and KPI math, CLI) and imports no Prefect; flows/, tasks/, blocks/
and deployments/ sit on top of it.
"""

__version__ = "0.1.0"
