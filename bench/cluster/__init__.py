"""`python -m bench.cluster`: Axon in cluster mode (one process per service, replicas,
Kafka + PostgreSQL, nginx router) under load, per-service work rates from the services'
own /metrics, replica scaling, and Synapse on PostgreSQL for comparison (bench/README.md)."""
