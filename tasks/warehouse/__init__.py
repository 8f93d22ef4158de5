"""The warehouse side: dbt glue, the Snowflake load, the pseudonym map."""
