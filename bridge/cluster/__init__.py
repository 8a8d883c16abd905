"""Past one process: worker supervision, the shared call directory, routing between workers."""
