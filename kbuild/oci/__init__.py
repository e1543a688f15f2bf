"""OCI images written directly (image spec 1.1): blobs, layers, bases,
registries and image layouts, with no daemon and no Dockerfile."""
