"""Artifact targets: zipapp, Docker image, Docker build context."""

TARGETS = ("zipapp", "image", "context")
