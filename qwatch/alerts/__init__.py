"""Alerts: rules over each poll, the messages they become, and the targets they go to.

Modules, each with one job:
    thresholds the rules' names and knobs (the settings read them; light to import)
    rules      pure: one site's polls and events in, alerts firing and resolved out
    payloads   pure: the bodies sent (Alertmanager webhook, Slack text, command env, email)
    notify     I/O: delivery to webhook, command and email targets, with timeouts and retries
    silences   pure: which alerts a silence keeps quiet
    schedule   pure: which messages are due after a poll (fired, reminders, resolved)
    dispatch   the daemon's side: each sampled site's state, and the delivery task

docs/alerts.md says how the daemon uses them. Importing this package imports nothing
heavy: `notify` (aiohttp, aiosmtplib) is imported only by whoever sends.
"""
