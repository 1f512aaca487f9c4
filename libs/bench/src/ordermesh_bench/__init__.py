"""ordermesh's load generator and benchmark suite, with the baselines it is measured
against: a bare gRPC echo chain (the transport bound), the same transactions in raw
SQL (the database bound) and a raw Kafka producer (the relay bound)."""
