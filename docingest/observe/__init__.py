"""How the service is observed: logs (`logs`), metrics (`http_metrics` in the API,
`worker_metrics` in the workers, added up in `metrics_store`, read at scrape time by
`collector`), the figures of `/stats` (`stats`, `counts`) and traces (`tracing`)."""
