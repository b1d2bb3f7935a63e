"""The prediction log and every table: the database, its dialects, migrations and
units of work, and the time-cached reads."""
