"""Students trained on kdpipe shards (pix2pixHD, StarGANv2, ...). Imports kdpipe.pipeline, never the reverse."""
