"""Weights files shipped with persaes (safetensors + JSON metadata); see weights/README.md."""
