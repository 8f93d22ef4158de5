"""Pixels: the display pipeline, preview JPEGs, lossless archive copies, pixel privacy."""
