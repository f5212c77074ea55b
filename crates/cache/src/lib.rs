//! Stores: telemetry cache, hunting budget, results, idempotency keys, IP ledger; Redis and in-memory.
