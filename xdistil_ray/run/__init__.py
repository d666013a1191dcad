"""The run's home: storage, the run folder, its lease, input identities, cluster placement."""
