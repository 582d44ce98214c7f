"""The app layer: the CLI and the web app.

The only code under campaignflow/ that may use flows/, tasks/, blocks/, deployments/ and Prefect
(the rest of campaignflow/ is the core, which imports none of them; `lint-imports` checks this).
"""
