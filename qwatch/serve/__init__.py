"""The daemon's HTTP listener (`listen`): Prometheus metrics, health probes, the live JSON.

state    pure: the daemon's snapshots after each poll -> a frozen View; health rules
metrics  a View as Prometheus text (a prometheus_client Collector)
server   the aiohttp app and the Listener the daemon starts
"""
