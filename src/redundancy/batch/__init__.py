"""A batch end to end: staging, the canvas, its tasks and the CLI runner's client side."""
