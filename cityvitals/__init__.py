"""cityvitals kernel: contracts, settings, topics, database, command line and local stack."""
