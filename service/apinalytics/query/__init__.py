"""Time-series queries: parameters, the rollup-aware planner, SQL per source, handlers."""
