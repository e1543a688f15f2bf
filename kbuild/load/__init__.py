"""load: a pipeline file (YAML or JSON, with every node's source position)
checked against its JSON Schema and for its own consistency, into a
`Pipeline` (kbuild.load.pipeline); every problem names its file, line and
JSON path."""
