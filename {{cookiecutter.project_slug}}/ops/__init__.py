"""Operations: health endpoints, metrics and log filters for running the project in production.

- `/healthz` and `/readyz` (health.py) for load balancers and orchestrators;
- `/metrics` (metrics.py) in Prometheus' text format, behind METRICS_TOKEN;
- probe requests kept out of the access logs (log_filters.py);
- messages the Redis channel layer dropped for a full channel, counted (layer_drops.py).

All three addresses are answered by `middleware.OperationsEndpointsMiddleware`, first in
MIDDLEWARE. The chat app knows nothing of this package: it keeps plain counters
(chat/metrics.py) that metrics.py reads.
"""
