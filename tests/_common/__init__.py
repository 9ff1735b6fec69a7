"""netservices."""
