"""Benchmarks that print figures (see README.md here); run each as a script."""
