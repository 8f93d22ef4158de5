"""Units of work: pure functions (no Prefect import) and thin ``@task`` wrappers beside them."""
