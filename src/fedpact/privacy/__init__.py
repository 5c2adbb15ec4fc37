"""Privacy mechanisms for federated rounds: secure aggregation, differential privacy, encryption."""
