"""Jobs: the spec a user writes (TOML) and its validation."""
