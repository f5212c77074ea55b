//! Hunting workers: batching, budget, KQL queries, cache, re-queries.
