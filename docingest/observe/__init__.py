"""How the service is observed: logs, metrics, traces and the figures of /stats."""
