"""Who is online where: the hub (one process) and the cluster hub over Redis, with the
messages nodes send each other."""
