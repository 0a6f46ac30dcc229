"""Transport: servicers translate proto <-> domain and map errors to statuses, nothing else."""
