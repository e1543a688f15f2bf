"""convert: checkpoints become the runtime the plan chose (ONNX), in a
build-side environment of their framework, and both answer the same inputs
before the build goes on (DESIGN.md section 10)."""
