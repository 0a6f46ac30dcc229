"""The store: tables, queries and transactions. The only place with SQL."""
