"""Chat and email notifications that people can rely on.

    audit log --fan_out (rules.py)--> outbox <--sweep (reminders.py, sla.py)
                                        |
                                        +--deliver_due (delivery.py, apprise)--> Slack, Teams, email, ...

- channels.py: channel names -> apprise URLs (secrets), from the Prefect block, a YAML file or the environment
- audience.py: a campaign's people, teams, time zones, quiet hours; who reads which channel
- rules.py:    which state change tells whom (the audit action -> message kind -> audience table)
- reminders.py / sla.py: due soon, overdue, cadence, escalation, digest; client turnaround times
- templates.py: Jinja2 templates a team can override
- outbox.py / delivery.py: dedupe keys, claims, retries with backoff, dead letters
- service.py:  one pass of all of it, for the sweep flow, the lifecycle flow and the CLI
"""
