"""What the log says: quality from ground truth, statistics, drift and traffic."""
