"""Email campaigns: content, audiences resolved into deliveries, sending in batches."""
