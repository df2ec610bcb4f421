"""The stage runner: the Stage protocol, fingerprints and skip/redo decisions, webdataset shards, locks."""
