"""Operations: metrics, log formats and the database health monitor."""
